/// The built-in templates of every channel, in `TemplateBook.builtInLocales` (docs/OPERATIONS.md lists them).
///
/// Each SMS fits one segment with a 10-digit code, a 7-letter app name, the app hash line and an origin-bound
/// line, and so stays within SMS Retriever's 140 bytes. The Latin-script ones keep to the GSM-7 alphabet (160
/// characters a segment): GSM-7 has `é`, `è`, `à`, `ü`, `ñ` but not `ó`, `á`, `ç` or `ã`, so the Spanish and
/// Portuguese SMS say `clave` and `senha` where e-mail says `código`. Hindi and Japanese need UCS-2 (70
/// characters a segment) and so are very short.
enum BuiltInTemplates {
    /// One locale's texts, from which its templates are made.
    private struct Texts {
        var locale: String
        var sms: String
        var subject: String
        /// The e-mail's first line (naming the code) and the rest (its expiry, what to do if not asked for).
        var emailFirst: String
        var emailRest: String
        /// The HTML part's line before the code in large type.
        var htmlIntro: String
        var voice: String
        var pushTitle: String
        var pushBody: String
    }

    private static let texts: [Texts] = [
        Texts(
            locale: "en",
            sms: "{app}: your code is {code}. Don't share it.",
            subject: "{code} is your {app} code",
            emailFirst: "Your {app} code is {code}.",
            emailRest: "It expires in {minutes} min. If you did not ask for it, ignore this e-mail.",
            htmlIntro: "Your {app} code is",
            voice: "Your {app} code is {code}. Again: {code}.",
            pushTitle: "{app} sign-in code",
            pushBody: "Your {app} code is {code}."
        ),
        Texts(
            locale: "es",
            sms: "{app}: tu clave de acceso es {code}. No la compartas con nadie.",
            subject: "{code} es tu código de {app}",
            emailFirst: "Tu código de {app} es {code}.",
            emailRest: "Caduca en {minutes} min. Si no lo has solicitado, ignora este correo.",
            htmlIntro: "Tu código de {app} es:",
            voice: "Tu código de {app} es {code}. Repito: {code}.",
            pushTitle: "Código de acceso de {app}",
            pushBody: "Tu código de {app} es {code}."
        ),
        Texts(
            locale: "fr",
            sms: "{app} : votre code est {code}. Ne le partagez avec personne.",
            subject: "{code} est votre code {app}",
            emailFirst: "Votre code {app} est {code}.",
            emailRest: "Il expire dans {minutes} min. Si vous ne l'avez pas demandé, ignorez cet e-mail.",
            htmlIntro: "Votre code {app} est :",
            voice: "Votre code {app} est {code}. Je répète : {code}.",
            pushTitle: "Code de connexion {app}",
            pushBody: "Votre code {app} est {code}."
        ),
        Texts(
            locale: "de",
            sms: "{app}: Ihr Code lautet {code}. Geben Sie ihn nicht weiter.",
            subject: "{code} ist Ihr Code für {app}",
            emailFirst: "Ihr Code für {app} lautet {code}.",
            emailRest:
                "Er ist {minutes} Min. gültig. Falls Sie ihn nicht angefordert haben, ignorieren Sie diese E-Mail.",
            htmlIntro: "Ihr Code für {app} lautet:",
            voice: "Ihr Code für {app} lautet {code}. Noch einmal: {code}.",
            pushTitle: "Anmeldecode für {app}",
            pushBody: "Ihr Code für {app} lautet {code}."
        ),
        Texts(
            locale: "pt",
            sms: "{app}: sua senha de acesso é {code}. Nunca a compartilhe.",
            subject: "{code} é o seu código {app}",
            emailFirst: "O seu código {app} é {code}.",
            emailRest: "Ele expira em {minutes} min. Se você não o solicitou, ignore este e-mail.",
            htmlIntro: "O seu código {app} é:",
            voice: "O seu código {app} é {code}. Repetindo: {code}.",
            pushTitle: "Código de acesso {app}",
            pushBody: "O seu código {app} é {code}."
        ),
        Texts(
            locale: "hi",
            sms: "{app} कोड: {code}",
            subject: "{code} आपका {app} कोड है",
            emailFirst: "आपका {app} कोड {code} है।",
            emailRest: "यह {minutes} मिनट में समाप्त हो जाएगा। अगर आपने यह कोड नहीं माँगा था, तो इस ईमेल को अनदेखा करें।",
            htmlIntro: "आपका {app} कोड है:",
            voice: "आपका {app} कोड है {code}। फिर से सुनिए: {code}।",
            pushTitle: "{app} साइन-इन कोड",
            pushBody: "आपका {app} कोड {code} है।"
        ),
        Texts(
            locale: "ja",
            sms: "【{app}】認証コード：{code}",
            subject: "{code} は{app}の認証コードです",
            emailFirst: "{app}の認証コードは {code} です。",
            emailRest: "このコードの有効期限は{minutes}分です。お心当たりのない場合は、このメールを破棄してください。",
            htmlIntro: "{app}の認証コード：",
            voice: "{app}の認証コードは、{code}です。もう一度繰り返します。{code}です。",
            pushTitle: "{app}のログインコード",
            pushBody: "{app}の認証コードは {code} です。"
        ),
    ]

    /// The built-in templates by channel and locale.
    static let all: [DeliveryChannel: [String: MessageTemplate]] = {
        var out: [DeliveryChannel: [String: MessageTemplate]] = [:]
        for t in texts {
            out[.sms, default: [:]][t.locale] = MessageTemplate(text: t.sms)
            out[.email, default: [:]][t.locale] = MessageTemplate(
                text: "\(t.emailFirst)\n\n\(t.emailRest)\n",
                subject: t.subject,
                html: """
                    <!doctype html><html lang="\(t.locale)"><body style="font-family:sans-serif">\
                    <p>\(t.htmlIntro)</p>\
                    <p style="font-size:32px;font-weight:bold;letter-spacing:4px">{code}</p>\
                    <p>\(t.emailRest)</p></body></html>
                    """
            )
            out[.voice, default: [:]][t.locale] = MessageTemplate(text: t.voice)
            out[.push, default: [:]][t.locale] = MessageTemplate(text: t.pushBody, title: t.pushTitle)
        }
        return out
    }()
}
