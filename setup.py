"""Maps sendrail's folders to import names.

`shared/` is the `sendrail` library every service imports, each `services/<name>/`
is `sendrail.services.<name>` (folder names keep their dashes, import names cannot),
and `sandbox/` (the local broker and mail servers) is `sendrail.sandbox`.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "sendrail": "shared",
    "sendrail.services": "services",
    "sendrail.services.router": "services/router",
    "sendrail.services.sender_gmail": "services/sender-gmail",
    "sendrail.services.sender_exchange": "services/sender-exchange",
    "sendrail.services.sender_smtp": "services/sender-smtp",
    "sendrail.services.bounce_watcher": "services/bounce-watcher",
    "sendrail.services.analytics": "services/analytics",
    "sendrail.sandbox": "sandbox",
}

packages = list(PACKAGE_ROOTS)
for name, folder in PACKAGE_ROOTS.items():
    for sub in find_packages(folder):
        full = f"{name}.{sub}"
        if full not in PACKAGE_ROOTS and "-" not in sub:
            packages.append(full)



def link_tree(destination: str) -> None:
    """The packages as plain folders of symlinks, for tools that cannot follow the mapping
    (mypy): `python -c 'import setup; setup.link_tree(".cache/typecheck")'`."""
    root = Path(destination)
    for name, folder in PACKAGE_ROOTS.items():
        target = root.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in Path(folder).iterdir():
            link = target / source.name
            if source.suffix in {".py", ".typed"} and not link.exists():
                link.symlink_to(source.resolve())
            elif source.is_dir() and (source / "__init__.py").exists() and "-" not in source.name:
                if not link.exists():
                    link.symlink_to(source.resolve(), target_is_directory=True)


if __name__ == "__main__":  # how setuptools runs this file
    setup(packages=packages, package_dir=PACKAGE_ROOTS, package_data={
        "": ["py.typed"],
        "sendrail.services.analytics": ["web/*.html", "web/*.js", "web/*.css"],
    })
