"""Notice wording: how mail systems word bounces, warnings, success notices and auto-replies.

Structure (RFC 3464 reports, RFC 5965 feedback reports) decides first; these patterns read the
notices that have none, in the languages mail systems localise them into: English, German,
French, Spanish, Italian, Portuguese, Dutch, Russian and Japanese (Exchange and Office 365
localise the whole NDR; Domino, Mail.ru, Yandex and Japanese carriers write their own).
Every pattern is compiled case-insensitive and searched, never matched from the start, unless
it says so. Each costs time linear in the text it reads: quantifiers are bounded, or possessive
(`*+`) where a run of blanks could be split between two of them or given back before what
follows fails (which would cost the run's length squared).
"""

import re
from typing import Final

# Who sends bounces: RFC 3464 section 2 suggests a null reverse-path and a system sender;
# in practice the From names the mail system. A mailer-daemon sends nothing but notices about
# deliveries; a postmaster or administrator also sends digests and announcements.
MAILER_DAEMON_RE: Final = re.compile(
    r"mailer[-_ ]?daemon|mail[-_ ]daemon|\bmdaemon\b|mail delivery (?:subsystem|system|service)"
    r"|mail ?delivery ?daemon",
    re.I,
)
SYSTEM_SENDER_RE: Final = re.compile(
    r"postmaster|\bpostmeister\b|mail administrator|system administrator|\bmail ?system\b"
    r"|\bsmtp ?gateway\b|\bmailer@|\bmail-?returns?@|\bbounces?@",
    re.I,
)

# Subjects of bounces and delivery warnings, including the localised forms of Exchange's
# "Undeliverable:" and Domino's "DELIVERY FAILURE:".
BOUNCE_SUBJECT_RE: Final = re.compile(
    r"undeliver|failed (?:mail|delivery)|mail failed|returning (?:message )?to sender"
    r"|delivery (?:status notification|failure|failed|has failed|problem|notification|error"
    r"|report)|mail delivery (?:failed|failure|system|problem)|failure notice|returned mail"
    r"|returned to sender|non[- ]?deliver|(?:mail|message) (?:could not be|not|was not|wasn't) delivered"
    r"|delayed mail|warning: could not send|mail (?:system )?error|bounced? (?:mail|message)"
    r"|could not (?:send|deliver)|message (?:blocked|rejected)|undelivered"
    r"|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|unzustellbare"
    r"|non remis|non distribu|[ée]chec de (?:la )?(?:remise|distribution)|impossible de remettre"
    r"|no se puede entregar|no entregado|no se pudo entregar|error de entrega"
    r"|non recapitabile|mancato recapito|impossibile recapitare"
    r"|n[ãa]o (?:[ée] poss[íi]vel )?entreg|n[ãa]o foi poss[íi]vel entregar|falha na entrega"
    r"|onbestelbaar|niet (?:afgeleverd|bezorgd)|olevererbar|nie mo[żz]na dostarczy|nedoru[čc]itel"
    r"|недоставл|не доставлен|не удалось доставить"
    r"|配信不能|配送不能|配信エラー|配信失敗|宛先不明|送信できません|エラーメール|未配信",
    re.I,
)
# "Re:", "Fwd:" and their localised forms: a person answering or passing on mail.
REPLY_SUBJECT_RE: Final = re.compile(
    r"^\s*(?:re|aw|sv|antw|fw|fwd|wg|tr|rv|ref|enc|odp|отв|пересл)\s*+(?:\[\d++\])?\s*+:", re.I
)

# The sentences that say a delivery failed, as the human-readable parts write them.
BOUNCE_PHRASE_RE: Final = re.compile(
    # English: RFC 3464 senders, Exchange, Gmail, Postfix, Exim, Sendmail, qmail, Domino, ...
    r"could ?n[o']?t be delivered|could ?n[o']?t deliver|was not delivered|undeliverable"
    r"|delivery to the following|delivery (?:has )?failed|permanent (?:error|failure|fatal)"
    r"|following address(?:\(?es\)?)? failed|user unknown|unknown user|no such user"
    r"|(?:wasn't|was not|unable|not able) (?:able )?to deliver|not yet been delivered"
    r"|delivery (?:is |has been )?delayed|returned mail|mail delivery software"
    r"|did not reach the following|not been delivered|no valid recipients|was not delivered to"
    r"|could not be sent|cannot be delivered"
    r"|can ?not deliver|delivery (?:of your message )?(?:to .{1,80} )?(?:has )?failed"
    r"|message (?:was )?(?:rejected|blocked|bounced)|had (?:permanent )?(?:fatal )?errors"
    r"|had delivery problems|failed to deliver|not delivered to|undelivered mail|this is the mail system"
    r"|qmail-send program|running the courier mail server|this is the mailer-daemon"
    r"|unable to be delivered|couldn't be delivered|rejected your message"
    r"|error occurred while (?:trying to )?deliver"
    # German
    r"|unzustellbar|konnte nicht zugestellt|nicht zugestellt werden|zustellung (?:an .{1,80} )?"
    r"(?:ist )?fehlgeschlagen|nicht ausgeliefert|konnte nicht (?:an .{1,80} )?(?:ausgeliefert|gesendet)"
    # French
    r"|non remis|n'a (?:pas )?pu (?:[êe]tre )?(?:remis|distribu|d[ée]livr|achemin|envoy)"
    r"|impossible de (?:remettre|distribuer|d[ée]livrer)"
    r"|[ée]chec (?:de la )?(?:remise|distribution|livraison)"
    # Spanish
    r"|no se puede entregar|no se (?:ha )?podido entregar|no (?:pudo|pudimos) entregar"
    r"|la entrega (?:a .{1,80} )?(?:ha )?fall|error (?:en|de) (?:la )?entrega|no ha sido entregado"
    # Italian
    r"|non recapitabile|non (?:è stato|e' stato|è) (?:possibile )?recapit|recapito non riuscito"
    r"|impossibile (?:recapitare|consegnare)|non (?:è stato|e' stato) consegnat"
    # Portuguese
    r"|n[ãa]o (?:[ée] poss[íi]vel|foi poss[íi]vel) entregar|n[ãa]o p[ôo]de ser entregue"
    r"|a entrega (?:a .{1,80} )?falhou|falha na entrega|n[ãa]o foi entregue"
    # Dutch
    r"|onbestelbaar|kan niet worden (?:bezorgd|afgeleverd)|kon niet worden (?:bezorgd|afgeleverd)"
    r"|bezorging (?:is )?mislukt|niet (?:worden )?afgeleverd"
    # Russian
    r"|не (?:может|могло|могут) быть доставлен|не (?:было )?доставлено|не удалось доставить"
    r"|доставка не выполнена|недоставленное|недоставляемое|невозможно доставить"
    # Japanese
    r"|配信(?:でき|出来)ませんでした|配信に失敗|配送(?:でき|出来)ませんでした|送信(?:でき|出来)ませんでした"
    r"|届けることができません|宛先不明|配信不能|エラーが発生",
    re.I,
)

# A delivery is late but still being retried (RFC 3464 Action: delayed, in prose).
DELAY_SUBJECT_RE: Final = re.compile(
    r"\bdelay(?:ed)?\b|\bwarning\b|still being retried|not yet delivered|\bverz[öo]gert|\bretard"
    r"|\bretrasad|\britardat|\batrasad|\bvertraagd|задерж|遅延",
    re.I,
)
DELAY_PHRASE_RE: Final = re.compile(
    r"not yet been delivered|not been delivered yet|has been delayed|is delayed|will (?:continue to )?"
    r"(?:re)?try|will be retried|no action is required|delivery attempts will continue|still trying"
    r"|will keep trying|continue (?:trying|attempting)|this is a warning|delayed for"
    r"|noch nicht zugestellt|wird weiter versucht|n'a pas encore (?:[ée]t[ée] )?(?:remis|distribu)"
    r"|todav[íi]a no se ha entregado|non è ancora stato recapitato|ainda n[ãa]o foi entregue"
    r"|nog niet (?:bezorgd|afgeleverd)|ещё не доставлено|еще не доставлено|まだ配信されていません",
    re.I,
)
PERMANENT_PHRASE_RE: Final = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal|failed)|failed permanently|(?:given|giving|gave) up"
    r"|will not (?:be )?(?:re)?try|will not be retried|no further (?:delivery )?attempts",
    re.I,
)

# Success notices: RFC 3464 Action: delivered/relayed in prose, Exchange's "Delivered:" and
# "Relayed:" notices and Gmail's "(Success)" (RFC 3461 NOTIFY=SUCCESS).
SUCCESS_SUBJECT_RE: Final = re.compile(
    r"^\s*(?:delivered|relayed|zugestellt|weitergeleitet|remis|entregado|recapitato|entregue"
    r"|bezorgd|доставлено|配信済み)\s*:"
    r"|\((?:success|relayed|delivered)\)|successful(?:ly)? deliver|delivery (?:confirmation|receipt)",
    re.I,
)
# Words that make a subject a failure or a warning, whatever else it says.
FAILURE_SUBJECT_RE: Final = re.compile(
    r"fail|undeliver|error|returned|delay|warning|problem|non[- ]?deliver|unzustellbar|non remis"
    r"|no se puede|non recapitabile|n[ãa]o [ée] poss[íi]vel|onbestelbaar|недостав|配信不能",
    re.I,
)
SUCCESS_PHRASE_RE: Final = re.compile(
    r"(?:delivery to (?:the following|these) recipients?(?: or groups)? (?:was |is )?"
    r"(?:successful|complete))|(?:successfully (?:been )?delivered)|(?:has been delivered to)"
    r"|(?:your message (?:was|has been) delivered)|zustellung an folgende empf[äa]nger"
    r"(?: oder gruppen)? wurde abgeschlossen|la remise .{0,40}est termin[ée]e",
    re.I,
)

# RFC 3834 section 5 and the subjects out-of-office responders write.
AUTO_REPLY_SUBJECT_RE: Final = re.compile(
    r"^\s*(?:(?:re|aw|sv|antw)\s*:\s*)?(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?"
    r"(?:reply|response|antwort)|auto:|autoreply|automatische antwort|abwesenheit|abwesend"
    r"|r[ée]ponse automatique|absence|respuesta autom[áa]tica|fuera de la oficina"
    r"|risposta automatica|fuori ufficio|resposta autom[áa]tica|fora do escrit[óo]rio|ausente"
    r"|automatisch antwoord|afwezig|автоответ|автоматический ответ|не в офисе|自動応答|不在"
    r"|on vacation|away from (?:the )?office|on leave|i am (?:currently )?(?:out|away))",
    re.I,
)

# Where a bounce's text stops describing the failure and starts quoting the original.
ORIGINAL_MARKER_RE: Final = re.compile(
    r"^[ \t]*(?:[-=*_]{2,}[ \t]*)?(?:"
    r"(?:this is a )?copy of (?:the|your) (?:original )?message"
    r"|original message"
    r"|(?:undelivered|returned|your|unsent) message (?:follows|below|text|headers|is attached)"
    r"|(?:returned|unsent|original) message(?: headers)?[ \t]*+(?:[-=*_]{2,}|:?[ \t]*+$)"
    r"|below this line"
    r"|below is a copy"
    r"|message (?:text )?follows"
    r"|(?:message )?headers? (?:of (?:the )?(?:original|returned) message|follows?)"
    r"|original message headers"
    r"|forwarded message"
    r"|urspr[üu]ngliche nachricht|message d'origine|mensaje original|messaggio originale"
    r"|mensagem original|oorspronkelijk bericht|исходное сообщение|元のメッセージ"
    r")",
    re.I | re.M,
)
