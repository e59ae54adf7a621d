"""Comparison keys for addresses: two spellings of one mailbox get the same key; pure.

A key decides whether two addresses are the same mailbox (is this recipient on the
suppression list, did this send go to the address a bounce names). It is never sent
anywhere: mail goes to the address as it was written.

- Domain: lowercased, in its ASCII (IDNA) form. RFC 5321 section 2.4: domain names are
  case-insensitive, and `bücher.example` is `xn--bcher-kva.example` on the wire.
- Local part: lowercased. RFC 5321 section 2.4 lets a server treat local parts as
  case-sensitive, but Gmail, Microsoft, Yahoo and virtually every provider treat them
  case-insensitively. For suppression the costs are lopsided: missing a bounced address
  because it was written `Bob@` instead of `bob@` keeps mailing a dead mailbox and costs
  the sender reputation, while two live mailboxes that differ only in case are vanishingly
  rare.
- gmail.com and googlemail.com: dots in the local part are dropped and the domain is
  gmail.com. Google documents that dots don't matter in Gmail addresses and that both
  domains reach the same account ("Dots don't matter in Gmail addresses", Gmail Help), so
  every spelling is one mailbox and a bounce of one is a bounce of all. Only these two
  domains: Google Workspace domains and every other provider keep dots significant.
- Plus-tags (`lee+news@`) are kept everywhere: not every provider has subaddressing, and
  where one does, a tag may be filtered or refused on its own.
"""

from __future__ import annotations

import functools
import unicodedata

from email_validator import EmailNotValidError, validate_email

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def comparison_key(address: str) -> str:
    """The key two spellings of the same mailbox share.

    Total: any string gets a key. What is not an address (no `@`, an undecodable domain)
    gets its lowercased self, which no real address's key equals by accident.
    """
    text = address.strip()
    local, at, domain = text.rpartition("@")  # a quoted local part may hold an `@`; a domain never
    if not at or not local or not domain:
        return text.lower()
    local = local.lower() if local.isascii() else unicodedata.normalize("NFC", local).lower()
    domain = _ascii_domain(domain.rstrip("."))
    if domain in GMAIL_DOMAINS:
        name, plus, tag = local.partition("+")
        local = name.replace(".", "") + plus + tag
        domain = "gmail.com"
    return f"{local}@{domain}"


@functools.lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain.lower()
    try:
        # The same IDNA 2008 / UTS 46 conversion that address validation applies.
        return validate_email(f"a@{domain}", check_deliverability=False,
                              allow_smtputf8=False).ascii_domain.lower()
    except EmailNotValidError:
        return unicodedata.normalize("NFC", domain).lower()
