"""Bounce reasons: the taxonomy, and the rules that map status codes and diagnostics onto it."""

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Reason(StrEnum):
    """Why a message was not delivered, named as the industry's bounce analysers name it."""

    USERUNKNOWN = "userunknown"
    HOSTUNKNOWN = "hostunknown"
    HASMOVED = "hasmoved"
    NOTACCEPT = "notaccept"
    MAILBOXFULL = "mailboxfull"
    FILTERED = "filtered"
    BLOCKED = "blocked"
    REJECTED = "rejected"
    SPAMDETECTED = "spamdetected"
    POLICYVIOLATION = "policyviolation"
    SECURITYERROR = "securityerror"
    VIRUSDETECTED = "virusdetected"
    CONTENTERROR = "contenterror"
    MESGTOOBIG = "mesgtoobig"
    EXCEEDLIMIT = "exceedlimit"
    EXPIRED = "expired"
    SUSPEND = "suspend"
    NORELAYING = "norelaying"
    NETWORKERROR = "networkerror"
    SYSTEMERROR = "systemerror"
    SYSTEMFULL = "systemfull"
    TOOMANYCONN = "toomanyconn"
    SPEEDING = "speeding"
    AUTHFAILURE = "authfailure"
    BADREPUTATION = "badreputation"
    REQUIREPTR = "requireptr"
    FAILEDSTARTTLS = "failedstarttls"
    NOTCOMPLIANTRFC = "notcompliantrfc"
    SYNTAXERROR = "syntaxerror"
    MAILERERROR = "mailererror"
    SUPPRESSED = "suppressed"
    ONHOLD = "onhold"
    UNDEFINED = "undefined"
    # Notices that are not bounces still carry a reason, so every record reads alike.
    VACATION = "vacation"
    FEEDBACK = "feedback"
    DELIVERED = "delivered"


HARD_REASONS: Final = frozenset({Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.HASMOVED, Reason.NOTACCEPT})
"""Only these say the address itself is permanently undeliverable; every other reason is soft,
even with a 5.x.x code, because a filtered or blocked message says nothing certain about the
address (PRODUCT.md section 4)."""

# Precedence, from first to last:
#   1. PRECISE_STATUS: the remote server chose a specific RFC 3463 detail whose meaning servers
#      agree on; it beats any wording, since diagnostics often quote the address, host names or
#      boilerplate that a text rule could misread.
#   2. TEXT_RULES: wording of the diagnostic, for generic codes (5.0.0, 5.7.1, ...), for codes
#      whose meaning differs between servers (5.1.10, 5.4.1, ...) and for replies with no code.
#   3. STATUS_FALLBACKS, then the status subject (SUBJECT_FALLBACKS): what the code alone says.
#   4. REPLY_CODE_FALLBACKS: what the SMTP basic reply code alone says (RFC 5321 section 4.2).
#   5. undefined.
# A Status of class 2 is a success (RFC 3463 section 3.1), whatever the text says; a class-2
# code inside a failure's text is a version number or a quoted transcript, and is ignored.
# Keys are "class.subject.detail"; "X" stands for either failure class (4 transient, 5 permanent).

PRECISE_STATUS: Final[Mapping[str, Reason]] = {
    # X.1: addressing status (RFC 3463 section 3.2)
    "5.1.1": Reason.USERUNKNOWN,  # bad destination mailbox address
    "5.1.2": Reason.HOSTUNKNOWN,  # bad destination system address
    "5.1.3": Reason.USERUNKNOWN,  # bad destination mailbox address syntax
    "5.1.4": Reason.USERUNKNOWN,  # destination mailbox address ambiguous
    "5.1.6": Reason.HASMOVED,  # destination mailbox has moved, no forwarding address
    "X.1.7": Reason.REJECTED,  # bad sender's mailbox address syntax
    "X.1.8": Reason.REJECTED,  # bad sender's system address (Microsoft: sender blocked)
    # X.2: mailbox status (RFC 3463 section 3.3)
    "5.2.1": Reason.SUSPEND,  # mailbox disabled, not accepting messages
    "X.2.2": Reason.MAILBOXFULL,  # mailbox full
    "X.2.3": Reason.MESGTOOBIG,  # message length exceeds administrative limit
    "X.2.121": Reason.SPEEDING,  # Microsoft: recipient's hourly receive limit from one sender
    "X.2.122": Reason.SPEEDING,  # Microsoft: recipient's hourly receive limit
    # X.3: mail system status (RFC 3463 section 3.4)
    "X.3.1": Reason.SYSTEMFULL,  # mail system full
    "X.3.3": Reason.SYSTEMERROR,  # system not capable of selected features
    "X.3.4": Reason.MESGTOOBIG,  # message too big for system
    "X.3.5": Reason.SYSTEMERROR,  # system incorrectly configured
    # X.4: network and routing status (RFC 3463 section 3.5)
    "X.4.2": Reason.NETWORKERROR,  # bad connection
    "X.4.3": Reason.SYSTEMERROR,  # directory server failure
    "X.4.6": Reason.NETWORKERROR,  # routing loop detected
    "X.4.7": Reason.EXPIRED,  # delivery time expired
    "X.4.14": Reason.NETWORKERROR,  # Microsoft: hop count exceeded
    "X.4.300": Reason.EXPIRED,  # Microsoft: message expired
    # X.5: mail delivery protocol status (RFC 3463 section 3.6)
    "X.5.1": Reason.SYNTAXERROR,  # invalid command
    "X.5.2": Reason.SYNTAXERROR,  # syntax error
    "X.5.3": Reason.EXCEEDLIMIT,  # too many recipients
    "X.5.4": Reason.SYNTAXERROR,  # invalid command arguments
    "X.5.5": Reason.SYNTAXERROR,  # wrong protocol version
    # X.6: message content or media status (RFC 3463 section 3.7, RFC 6531)
    "X.6.1": Reason.CONTENTERROR,  # media not supported
    "X.6.2": Reason.CONTENTERROR,  # conversion required and prohibited
    "X.6.3": Reason.CONTENTERROR,  # conversion required but not supported
    "X.6.5": Reason.CONTENTERROR,  # conversion failed
    "X.6.7": Reason.CONTENTERROR,  # non-ASCII addresses not permitted (RFC 6531)
    "X.6.8": Reason.CONTENTERROR,  # UTF-8 string reply required (RFC 6531)
    "X.6.11": Reason.NOTCOMPLIANTRFC,  # Microsoft: bare line feeds are illegal
    # X.7: security or policy status (RFC 3463 section 3.8, RFC 4954, RFC 5248, RFC 7293,
    # RFC 7372, RFC 8689)
    "X.7.3": Reason.SECURITYERROR,  # security conversion required but not possible
    "X.7.4": Reason.SECURITYERROR,  # security features not supported
    "X.7.5": Reason.SECURITYERROR,  # cryptographic failure
    "X.7.6": Reason.SECURITYERROR,  # cryptographic algorithm not supported
    "X.7.7": Reason.SECURITYERROR,  # message integrity failure
    "X.7.8": Reason.AUTHFAILURE,  # authentication credentials invalid
    "X.7.9": Reason.AUTHFAILURE,  # authentication mechanism is too weak
    "X.7.10": Reason.FAILEDSTARTTLS,  # encryption needed
    "X.7.11": Reason.FAILEDSTARTTLS,  # encryption required for requested mechanism
    "X.7.12": Reason.AUTHFAILURE,  # password transition needed
    "X.7.16": Reason.MESGTOOBIG,  # message too big for the specified priority
    "X.7.17": Reason.HASMOVED,  # mailbox owner has changed
    "X.7.18": Reason.HASMOVED,  # domain owner has changed
    "X.7.20": Reason.AUTHFAILURE,  # no passing DKIM signature found
    "X.7.21": Reason.AUTHFAILURE,  # no acceptable DKIM signature found
    "X.7.22": Reason.AUTHFAILURE,  # no valid author-matched DKIM signature found
    "X.7.23": Reason.AUTHFAILURE,  # SPF validation failed
    "X.7.24": Reason.AUTHFAILURE,  # SPF validation error
    "X.7.25": Reason.REQUIREPTR,  # reverse DNS validation failed
    "X.7.26": Reason.AUTHFAILURE,  # multiple authentication checks failed
    "X.7.27": Reason.REJECTED,  # sender address has null MX
    "X.7.29": Reason.AUTHFAILURE,  # ARC validation failure
    "X.7.30": Reason.FAILEDSTARTTLS,  # REQUIRETLS support required
    "X.7.57": Reason.AUTHFAILURE,  # Microsoft: client not authenticated to send mail
    "X.7.64": Reason.NORELAYING,  # Microsoft: relay access denied
    "X.7.705": Reason.BLOCKED,  # Microsoft: tenant exceeded its threshold, sending blocked
    "X.7.708": Reason.BLOCKED,  # Microsoft: traffic not accepted from this IP
    "X.7.750": Reason.BLOCKED,  # Microsoft: unregistered domain blocked from sending
}

STATUS_FALLBACKS: Final[Mapping[str, Reason]] = {
    # RFC 7505 gives X.1.10 to "recipient address has null MX", Microsoft uses it for
    # RESOLVER.ADR.RecipientNotFound; the text tells them apart, the sendrail channels
    # (Gmail, Exchange Online) make Microsoft's meaning the likely one.
    "X.1.10": Reason.USERUNKNOWN,
    "4.2.1": Reason.SPEEDING,  # Gmail: "receiving mail too quickly" (PRODUCT.md section 3)
    "X.3.2": Reason.SYSTEMERROR,  # system not accepting network messages
    # RFC 3463 X.4.1 is "no answer from host"; Microsoft's directory-based edge blocking sends
    # 5.4.1 "Recipient address rejected: Access denied" for a recipient that does not exist.
    "X.4.1": Reason.NETWORKERROR,
    "X.4.4": Reason.HOSTUNKNOWN,  # unable to route: no MX or address record for the domain
    # RFC 3463 X.4.5 is "mail system congestion"; Gmail sends 5.4.5 for a sending quota.
    "X.4.5": Reason.SYSTEMFULL,
    "5.7.1": Reason.REJECTED,  # delivery not authorized, message refused
    "X.7.13": Reason.SUSPEND,  # RFC 5248 "user account disabled"; Microsoft: restricted group
    "X.7.14": Reason.SECURITYERROR,  # trust relationship required; Microsoft: restricted group
}

SUBJECT_FALLBACKS: Final[Mapping[str, Reason]] = {
    "3": Reason.SYSTEMERROR,
    "4": Reason.NETWORKERROR,
    "6": Reason.CONTENTERROR,
    "7": Reason.SECURITYERROR,
}

REPLY_CODE_FALLBACKS: Final[Mapping[str, Reason]] = {
    "421": Reason.SYSTEMERROR,  # service not available, closing transmission channel
    "452": Reason.SYSTEMFULL,  # insufficient system storage
    "551": Reason.HASMOVED,  # user not local; please try <forward-path> (RFC 5321 section 3.4)
    "552": Reason.MAILBOXFULL,  # exceeded storage allocation
    "554": Reason.REJECTED,  # transaction failed
}


def required_literal(alternative: str) -> str | None:
    """The longest run of plain characters every match of `alternative` contains, or None
    where none of 3 or more can be told (a top-level `|`, or only groups and classes).

    Python's `re` tries each branch of a long alternation at each position; checking such a
    literal with `in` first skips most rules at once, which keeps classification fast.
    """
    best, run, i, depth = "", "", 0, 0
    while i < len(alternative):
        char = alternative[i]
        if char == "\\":
            escaped = alternative[i + 1:i + 2]
            i += 2
            if escaped in ("b", "B"):
                continue  # zero-width
            if escaped and not escaped.isalnum():
                run += escaped
                continue
            best, run = max(best, run, key=len), ""  # a class such as \s or \d
            continue
        if char in "([":
            best, run = max(best, run, key=len), ""
            closing = ")" if char == "(" else "]"
            depth, i = 1, i + 1
            while i < len(alternative) and depth:
                if alternative[i] == "\\":
                    i += 2
                    continue
                if char == "(" and alternative[i] == "(":
                    depth += 1
                elif alternative[i] == closing:
                    depth -= 1
                i += 1
            continue
        if char == "|":
            return None
        if char in "?*{":
            run = run[:-1]  # the character before is optional
            best, run = max(best, run, key=len), ""
            if char == "{":
                i = alternative.find("}", i) + 1 or len(alternative)
                continue
        elif char in ".^$+":
            best, run = max(best, run, key=len), ""
        else:
            run += char
        i += 1
    best = max(best, run, key=len)
    return best if len(best) >= 3 else None


_GATES: dict[re.Pattern[str], tuple[str, ...] | None] = {}
"""Per rule: literals one of which a text must contain for the rule to match (None: always try)."""
WORDING_ALTERNATIVES: list[str] = []
"""Every alternative of every wording rule, as written (for tests of the gates)."""


def _rule(reason: Reason, *alternatives: str) -> tuple[Reason, re.Pattern[str]]:
    WORDING_ALTERNATIVES.extend(alternatives)
    pattern = re.compile("|".join(alternatives))
    literals = [required_literal(a) for a in alternatives]
    _GATES[pattern] = None if None in literals else tuple(lit for lit in literals if lit)
    return reason, pattern


# Wording of the diagnostic, lowercased, addresses replaced by "<address>". The first rule that
# matches wins, so the order is the precedence: refusals of the *sender* first (their wording
# often names recipient things: "Sender address rejected: User unknown"), then causes whose
# words are specific ("blocked using zen.spamhaus.org" before spam, "sending quota exceeded"
# before a full mailbox, "domain does not exist" before "does not exist"), generic words last.
TEXT_RULES: Final[tuple[tuple[Reason, re.Pattern[str]], ...]] = (
    _rule(
        Reason.REJECTED,
        r"sender (address )?(rejected|refused|denied|unknown|invalid)",
        r"sender verify failed",
        r"sender domain (must exist|not found|unknown)",
        r"(unknown|invalid) sender",
        r"sender (is )?not (allowed|authori[sz]ed|permitted)",
        r"administrative prohibition",
        r"\bbatv\b",
        r"(null|empty|blank) (envelope )?senders? (is |are )?not (allowed|accepted)",
        r"bogus mail from",
        r"returned mail not accepted",
        r"sender is (a )?spammer",
        r"unroutable sender",
        r"mail from not owned",
        r"address is not verified",
        r"domain of sender address",
        r"sender not pre-?approved",
        r"third-party dsns",
        r"[ée]metteur (invalide|refus[ée])",
        r"absender (abgelehnt|ung[üu]ltig|unbekannt)",
        r"remitente (rechazado|no v[áa]lido|desconocido)",
    ),
    _rule(Reason.SUPPRESSED, r"suppression list", r"\bsuppressed\b"),
    _rule(
        Reason.AUTHFAILURE,
        r"\bspf\b",
        r"\bdkim\b",
        r"\bdmarc\b",
        r"unauthenticated (e-?mail|mail|message)",
        r"authentication (failed|required|unsuccessful|credentials)",
        r"not authenticated",
    ),
    _rule(
        Reason.REQUIREPTR,
        r"reverse (dns|lookup|hostname|mapping)",
        r"\bptr\b",
        r"\brdns\b",
        r"cannot find your (hostname|reverse)",
    ),
    _rule(
        Reason.FAILEDSTARTTLS,
        r"starttls",
        r"\btls\b[^.]{0,30}(required|failed|failure|negotiat|handshake)",
        r"encryption (required|needed)",
        r"certificate (verif|has expired|expired|invalid|not trusted)",
    ),
    _rule(
        Reason.NORELAYING,
        r"relay(ing)?\b[^.]{0,30}\b(denied|not permitted|not allowed|prohibited|refused)",
        r"(unable|not (permitted|allowed|authori[sz]ed)) to relay",
        r"(does|do|will) not relay",
        r"no relaying",
    ),
    _rule(Reason.BADREPUTATION, r"reputation", r"sender ?score"),
    _rule(
        Reason.BLOCKED,
        r"blocked using",
        r"black ?list",
        r"block ?list",
        r"deny ?list",
        r"(?<!not )\blisted (at|on|in|by)\b",
        r"\b(dns|rhs|uri)bl\b",
        r"\brbl\b",
        r"spamhaus",
        r"spamcop",
        r"barracuda",
        r"\bsorbs\b",
        r"banned sending ip",
        r"client host rejected",
        r"\b(ip|client|host|address|network)\b[^.]{0,60}\b(blocked|banned|blacklisted)\b",
    ),
    _rule(
        Reason.EXCEEDLIMIT,
        r"sending (quota|limit)",
        r"submission ?quota",
        r"daily (user )?(sending )?(quota|limit)",
        r"too many recipients",
        r"recipients? (limit|count) (exceeded|reached)",
        r"maximum number of recipients",
    ),
    _rule(
        Reason.TOOMANYCONN,
        r"too many (concurrent |simultaneous |smtp |open )?(connections|sessions)",
        r"connection (limit|count) (exceeded|reached)",
        r"concurrent connections limit",
    ),
    _rule(
        Reason.SPEEDING,
        r"rate ?limit",
        r"\brate (exceeded|of)\b",
        r"too (fast|quickly)",
        r"too many (messages|mails|e-?mails|deliveries)",
        r"throttl",
        r"slow down",
    ),
    _rule(
        Reason.MAILBOXFULL,
        r"(mailbox|mail ?folder|inbox) (is )?(full|over)",
        r"full mailbox",
        r"mailbox (size|storage) (limit|quota)",
        # Sending quotas are read above; any other quota a bounce mentions is the mailbox's.
        r"quota",
        r"exceed(ed|s)? (the |his |her |their |its )?(storage|disk|mailbox) ?(limit|space|size)",
        r"(mailbox|user|recipient)[^.]{0,30}(out of|insufficient|not enough) (storage|space)",
        r"exceeded storage allocation",
        r"(not|does not have) enough (storage |disk )?space",
        r"disk space limit",
        r"space has been used up",
        r"too many messages (on the server|in (the|this) mailbox)",
        r"too much mail data",
        r"mail file size exceeds",
        r"(postfach|mailbox|e-?mail-?konto)( des empf[äa]ngers)? (ist )?(voll|[üu]berf[üu]llt)",
        r"speicher(platz)?[^.]{0,30}(voll|[üu]berschritten|ersch[öo]pft)",
        r"bo[iî]te (aux lettres |mail |de r[ée]ception )?(du destinataire )?(est )?pleine",
        r"(quota|espace)[^.]{0,20}(d[ée]pass[ée]|insuffisant)",
        r"buz[óo]n (de correo )?(del destinatario )?(est[áa] )?(lleno|completo)",
        r"cuota[^.]{0,20}(excedida|superada)",
        r"casella (di posta )?(del destinatario )?(è |e' )?piena",
        r"spazio (su disco )?esaurito",
        r"caixa (de correio |postal |de entrada )?(do destinat[áa]rio )?(est[áa] )?(cheia|lotada)",
        r"(mailbox|postvak|postbus|brievenbus) (van de ontvanger )?(is )?(vol|overvol)",
        r"ящик[^.]{0,30}переполнен|переполнен|превышен[аоы]? (квота|лимит|размер ящика)",
        r"容量(超過|オーバー|不足|が不足|を超え)|メールボックスが(いっぱい|一杯|満杯)|保存容量",
    ),
    _rule(
        Reason.MESGTOOBIG,
        r"(message|mail|e-?mail)( size)? (is )?(too (big|large)|exceeds)",
        r"size (limit|exceeds|exceeded)",
        r"exceed(s|ed)? (the )?(max(imum)?|allowed|permitted)( \w+)? (message )?size",
        r"message length exceeds",
        r"too large",
    ),
    _rule(
        Reason.HASMOVED,
        r"has (been )?moved",
        r"no forwarding address",
        r"address has changed",
        r"user not local",
    ),
    _rule(
        Reason.NOTACCEPT,
        r"null ?mx",
        r"(domain|host|server|system)\b.{0,80}?\b(does not|doesn't) accept (any )?(e-?)?mail",
    ),
    _rule(
        Reason.SUSPEND,
        r"(account|mailbox|user|recipient)\b[^.]{0,30}\b"
        r"(disabled|suspended|inactive|deactivated|locked|frozen)",
        r"inactive (account|user|mailbox|recipient)",
        r"account (has been )?(closed|terminated|discontinued|expired)",
        r"(konto|postfach|mailbox|account)[^.]{0,30}(deaktiviert|gesperrt|stillgelegt)",
        r"(compte|bo[iî]te)[^.]{0,30}(d[ée]sactiv[ée]|suspendu|bloqu[ée]|ferm[ée])",
        r"(cuenta|buz[óo]n)[^.]{0,30}(desactivad|suspendid|bloquead|inactiv)",
        r"(account|casella)[^.]{0,30}(disattivat|sospes|bloccat)",
        r"(conta|caixa)[^.]{0,30}(desativad|suspens|bloquead|inativ)",
        r"(account|mailbox|postvak)[^.]{0,30}(gedeactiveerd|geblokkeerd|opgeschort)",
        r"(учетная запись|ящик|аккаунт|пользователь)[^.]{0,30}(заблокирован|отключен|деактивирован)",
        r"(アカウント|メールボックス)[^。]{0,10}(停止|無効|凍結)",
    ),
    _rule(
        Reason.HOSTUNKNOWN,
        r"(domain|host)( name)? (not found|does not exist|doesn't exist|unknown|could not be found)",
        r"(unknown|non-?existent|invalid) (domain|host)",
        r"no such (domain|host)",
        r"name service error",
        r"\bnxdomain\b",
        r"no mx (record|host)",
        r"unroutable (mail )?domain|unrouteable (mail )?domain",
        r"(could ?n[o']?t|could not|unable to) find any host",
        r"no host named",
        r"(domain|domaine|dom[äa]ne|dominio|dom[íi]nio|domein|домен)\b[^.]{0,40}"
        r"(n'existe pas|inconnu|introuvable|existiert nicht|unbekannt|nicht gefunden|no existe"
        r"|desconocido|inexistente|non esiste|sconosciuto"
        r"|n[ãa]o existe|desconhecido|bestaat niet|onbekend|не существует|не найден|неизвестен)",
        r"(unbekannte|inexistente|onbekend|неизвестный) (domain|dominio|domein|домен)",
        r"ドメインが(存在しません|見つかりません)|ドメイン名が不正",
    ),
    _rule(
        Reason.USERUNKNOWN,
        r"user (unknown|not found|doesn't exist|does not exist)",
        r"unknown (or illegal )?(user|recipient|mailbox|address|local[- ]?part|alias)",
        r"no such (user|mailbox|recipient|address|account|person|local user)",
        r"(does not|doesn't|did not|no longer) exist",
        r"recipient ?not ?found",
        r"(user|mailbox|recipient|address|account|addressee)( name)? (is )?"
        r"(unknown|invalid|not found|not known|not recognized)",
        r"(invalid|bad) (recipient|mailbox|address|user|destination)",
        r"not a valid (user|mailbox|recipient|address)",
        r"no mailbox here",
        r"mailbox not found",
        r"(doesn't|does not) have an? .{0,40}?account",
        r"(wasn't|was not|couldn't be|could not be) found",
        r"unrouteable address",
        r"nosuchuser",
        # Microsoft directory-based edge blocking: the recipient is not in the directory.
        r"recipient address rejected: access denied",
        r"recipient address rejected: (invalid|unknown|user)",
        r"recip(ient)? ?not ?found",
        r"mailbox (is )?unavailable",
        r"mailbox unavaiable",
        r"not present in (the )?directory",
        r"not a known user",
        r"not an active address",
        r"no (account|mailbox|one) (by that name|at this address|here|found|available)",
        r"not a local (address|user)",
        r"recipient (is )?not (accepted|local|ok)",
        r"(un|not )known (e-?mail )?address",
        r"address (unknown|invalid|not valid)",
        r"wrong or no longer valid",
        r"no longer (valid|accepts mail)",
        r"(bad|valid)rcptto",
        r"missing home directory",
        r"(user|recipient) not (active|exist)",
        r"not listed in (the )?(domino )?(directory|public name)",
        r"\bin name directory",
        r"utilisateur inconnu|destinataire inconnu|adresse[^.]{0,20}(inconnue|invalide|introuvable)",
        r"(destinataire|utilisateur|bo[iî]te|adresse)[^.]{0,30}n'existe pas",
        r"benutzer unbekannt|unbekannte[rs]? (benutzer|empf[äa]nger|e-?mail|adresse|postfach)",
        r"empf[äa]nger unbekannt|existiert nicht|nicht gefunden"
        r"|ung[üu]ltige[rs]? (e-?mail-?)?(adresse|empf[äa]nger)"
        r"|kein(en)? solche[rn]? benutzer",
        r"usuario (desconocido|inexistente|no existe)|destinatario (desconocido|inexistente|no existe)",
        r"no existe (dicha persona|ese usuario|el usuario)|direcci[óo]n[^.]{0,20}(no v[áa]lida|inexistente"
        r"|desconocida|no existe)|cuenta[^.]{0,20}no existe",
        r"utente (sconosciuto|inesistente)|destinatario (sconosciuto|inesistente)|nessun utente"
        r"|indirizzo[^.]{0,20}(non valido|inesistente|sconosciuto|non esiste)",
        r"(usu[áa]rio|utilizador|destinat[áa]rio) (desconhecido|inexistente|n[ãa]o existe)"
        r"|endere[çc]o[^.]{0,20}(inv[áa]lido|inexistente|desconhecido|n[ãa]o existe)",
        r"onbekende (gebruiker|ontvanger)|gebruiker (onbekend|bestaat niet)|ontvanger (onbekend|bestaat niet)"
        r"|(e-?mail)?adres[^.]{0,20}(bestaat niet|onbekend|ongeldig)",
        r"пользовател[ья][^.]{0,20}не (найден|существует)|нет такого (пользователя|ящика|адреса|получателя)"
        r"|(адрес|ящик|получатель)[^.]{0,30}не (найден|существует)"
        r"|неизвестный (пользователь|получатель|адрес)",
        r"宛先不明|存在しません|存在しない|ユーザー?(が|は)?(見つかりません|存在しません|不明)|該当するユーザ",
    ),
    _rule(
        Reason.EXPIRED,
        r"retry time(out)? (exceeded|reached)",
        r"(message|delivery) (time )?expired",
        r"too long (in|on) (the )?queue",
        r"in the queue too long",
        r"retry (period|time) (has )?(expired|exceeded)",
        r"too many retries",
        r"could not be delivered (for|within) \d+",
        r"\bexpired\b",
    ),
    _rule(
        Reason.SPAMDETECTED,
        r"\bspam\b",
        r"spammy",
        r"unsolicited",
        r"junk (mail|e-?mail)",
        r"phish",
        r"\bube\b",
        r"bulk (e-?)?mail",
        r"pourriel|courrier ind[ée]sirable|correo no deseado|posta indesiderata|спам|迷惑メール",
    ),
    _rule(Reason.VIRUSDETECTED, r"virus", r"malware", r"infected", r"trojan"),
    _rule(Reason.POLICYVIOLATION, r"\bpolic(y|ies)\b", r"violat", r"prohibited"),
    _rule(
        Reason.FILTERED,
        r"\bfilter",
        r"only accepts?",
        r"accepts? (mail|messages|e-?mail) only",
        r"not (in|on) (the )?(allow|white) ?list",
        r"delivery not authori[sz]ed",
        r"not authori[sz]ed to (send|receive)",
        r"not accepting (any )?mail",
        r"recipient preferences",
        r"resolver\.rst\.notauthorized",
        r"user reject",
        r"blocked by the recipient",
        r"refuses? to (receive|accept)",
    ),
    _rule(
        Reason.NOTCOMPLIANTRFC,
        r"\brfc ?(2822|5322|822|5321|2821)\b",
        r"not (rfc[- ]?)?compliant",
        r"bare (lf|linefeed|line feed)",
        r"duplicate header",
        r"missing (a |the )?(date|from|message-id|subject) header",
        r"(malformed|invalid) header",
    ),
    _rule(
        Reason.CONTENTERROR,
        r"\bmime\b",
        r"content (error|rejected|not accepted)",
        r"line (too long|length)",
        r"8-?bit",
        r"invalid (content|character)",
    ),
    _rule(
        Reason.SYNTAXERROR,
        r"syntax error",
        r"(unrecognized|invalid|unknown) command",
        r"command (not recognized|unrecognized)",
        r"bad sequence of commands",
    ),
    _rule(
        Reason.SYSTEMFULL,
        r"insufficient (system )?storage",
        r"disk full",
        r"no space left",
        r"(system|server|queue) (is )?full",
    ),
    _rule(
        Reason.NETWORKERROR,
        r"connection (timed out|refused|reset|closed|lost|dropped)",
        r"timed out",
        r"network (error|is unreachable|unreachable)",
        r"no route to host",
        r"(host|network) unreachable",
        r"(unable|could not|couldn't|failed) to (connect|establish)",
        r"(wasn't|was not) able to (establish|connect)",
        r"\bloop(s|ing|ed)?\b",
        r"connection to .{0,60}?failed",
        r"did not respond|not responding|no response from",
        r"hop count",
        r"too many hops",
    ),
    _rule(
        Reason.MAILERERROR,
        r"mailer error",
        r"local delivery failed",
        r"command died",
        r"exit (status|code)",
    ),
    _rule(
        Reason.SYSTEMERROR,
        r"system error",
        r"internal (server )?error",
        r"temporary (local )?(failure|problem|error)",
        r"local error",
        r"try again later",
        r"service (not available|unavailable)",
        r"configuration error",
    ),
)
_STATUS_RE: Final = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_REPLY_CODE_RE: Final = re.compile(r"^([245])\d\d$")
# A word that may be an address: a run of characters that are neither blanks nor address
# delimiters, from its start and past its first "@". Matching from the start of a run only, with
# possessive runs, reads each character once; an unanchored `x+@y+` would rescan a long word
# from every position in it.
_ADDRESS_WORD_RE: Final = re.compile(r"(?<![^\s<>\"'(),;:\[\]])[^\s<>\"'(),;:\[\]@]*+@[^\s<>\"'(),;:\[\]]*+")
_MAX_DIAGNOSTIC_SCAN_CHARS: Final = 4000


def is_hard(reason: str) -> bool:
    """Whether a bounce for this reason means the address is permanently undeliverable."""
    return reason in HARD_REASONS


def find_statuses(text: str) -> list[str]:
    """RFC 3463 status codes written in a text, in order (IP addresses are not mistaken)."""
    return [".".join(match.groups()) for match in _STATUS_RE.finditer(text)]


def classify(status: str | None, reply_code: str | None, diagnostic: str | None) -> str:
    """The taxonomy name for one failed recipient; the precedence is described above the tables."""
    text = _normalised_text(diagnostic)
    given = find_statuses(status or "")[:1]
    if given and given[0].startswith("2."):
        return Reason.DELIVERED.value
    # Codes the diagnostic writes are often more specific than the Status field ("5.0.0");
    # a success code in the text is a version number or a quoted transcript, not the outcome.
    statuses = given + [
        code for code in find_statuses(text) if code not in given and not code.startswith("2.")
    ]
    for code in statuses:
        precise = _lookup(PRECISE_STATUS, code)
        if precise is not None:
            return precise.value
    for reason, pattern in TEXT_RULES:
        gate = _GATES[pattern]
        if gate is not None and not any(literal in text for literal in gate):
            continue
        if pattern.search(text):
            return reason.value
    for code in statuses:
        fallback = _lookup(STATUS_FALLBACKS, code)
        if fallback is None:
            fallback = SUBJECT_FALLBACKS.get(code.split(".")[1])
        if fallback is not None:
            return fallback.value
    reply = (reply_code or "").strip()
    if _REPLY_CODE_RE.match(reply):
        if reply.startswith("2"):
            return Reason.DELIVERED.value
        if reply in REPLY_CODE_FALLBACKS:
            return REPLY_CODE_FALLBACKS[reply].value
    return Reason.UNDEFINED.value


def _normalised_text(diagnostic: str | None) -> str:
    """Lowercased, bounded, with addresses masked so that "spam@example.com" reads as no word."""
    text = (diagnostic or "")[:_MAX_DIAGNOSTIC_SCAN_CHARS].lower()
    return " ".join(_ADDRESS_WORD_RE.sub(_masked, text).split())


def _masked(word: re.Match[str]) -> str:
    """An address is a word with an "@" that has something on both sides of it."""
    return "<address>" if "@" in word.group()[1:-1] else word.group()


def _lookup(table: Mapping[str, Reason], code: str) -> Reason | None:
    """The exact code's entry, else the entry for either failure class ("X.y.z")."""
    exact = table.get(code)
    if exact is not None or code[0] not in "45":
        return exact
    return table.get("X" + code[1:])
