//! Sending the outbox's e-mails: `.eml` files under `<data dir>/mail/` by default, SMTP when
//! `MARKETPLACE_SMTP_URL` names a server. Both transports are synchronous: call them on the
//! blocking pool.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{FileTransport, Message, SmtpTransport, Transport};

use super::Email;

const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where e-mails go.
pub enum Mailer {
    Files {
        dir: PathBuf,
        transport: FileTransport,
    },
    Smtp {
        server: String,
        transport: Box<SmtpTransport>,
    },
}

impl Mailer {
    /// SMTP for `smtp://[user:password@]host[:port]` (no TLS, for local relays and test
    /// servers), `smtp://…?tls=required` (STARTTLS) or `smtps://…` (TLS from the start);
    /// otherwise files in `dir`, which is created.
    pub fn new(smtp_url: Option<&str>, dir: &Path) -> Result<Mailer, String> {
        match smtp_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                let transport = SmtpTransport::from_url(url)
                    .map_err(|e| format!("MARKETPLACE_SMTP_URL is not usable: {e}"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Ok(Mailer::Smtp {
                    server: describe_server(url),
                    transport: Box::new(transport),
                })
            }
            None => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create the mail directory {}: {e}", dir.display())
                })?;
                Ok(Mailer::Files {
                    dir: dir.to_path_buf(),
                    transport: FileTransport::new(dir),
                })
            }
        }
    }

    /// For the log: where mail goes, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Files { dir, .. } => format!("files in {}", dir.display()),
            Mailer::Smtp { server, .. } => format!("SMTP via {server}"),
        }
    }

    /// Sends one message; the error says why not, and whether trying again could help.
    pub fn send(&self, message: &Message) -> Result<(), MailError> {
        match self {
            Mailer::Files { transport, .. } => {
                transport.send(message).map(|_| ()).map_err(|e| MailError {
                    message: format!("cannot write the e-mail file: {e}"),
                    permanent: false,
                })
            }
            Mailer::Smtp { transport, .. } => {
                transport.send(message).map(|_| ()).map_err(|e| MailError {
                    message: format!("SMTP: {e}"),
                    // A 5xx answer (no such mailbox...) will not change on a retry.
                    permanent: e.is_permanent(),
                })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError {
    pub message: String,
    pub permanent: bool,
}

/// `scheme://host:port`, never the user or password.
fn describe_server(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "an SMTP server".into(),
    }
}

/// The sender every e-mail carries, from `MARKETPLACE_MAIL_FROM` (`Name <address>` or an address).
pub fn parse_from(raw: &str) -> Result<Mailbox, String> {
    raw.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("MARKETPLACE_MAIL_FROM `{raw}` is not an e-mail address: {e}"))
}

/// The outbox's e-mail as a message. Its Message-ID derives from the outbox row, so a retry
/// after an uncertain send is recognisably the same message.
pub fn build(
    from: &Mailbox,
    outbox_id: &str,
    email: &Email,
    date: SystemTime,
) -> Result<Message, String> {
    let address = email
        .to
        .parse()
        .map_err(|e| format!("the recipient {} is not an e-mail address: {e}", email.to))?;
    let to = Mailbox::new(Some(email.to_name.clone()), address);
    let domain = from.email.domain().to_string();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .date(date)
        .message_id(Some(format!("<{outbox_id}@{domain}>")))
        .header(ContentType::TEXT_PLAIN)
        .body(email.text.clone())
        .map_err(|e| format!("cannot build the e-mail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_sender_recipient_and_a_stable_id() {
        let from = parse_from("Data Marketplace <no-reply@marketplace.example>").unwrap();
        let email = Email {
            to: "ada@example.com".into(),
            to_name: "Ada Lovelace".into(),
            subject: "Your subscription to \"Ships\" is approved".into(),
            text: "Approved.\n".into(),
        };
        let raw = String::from_utf8(
            build(&from, "msg_1", &email, SystemTime::UNIX_EPOCH)
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(
            raw.contains("To: \"Ada Lovelace\" <ada@example.com>"),
            "{raw}"
        );
        assert!(
            raw.contains("Message-ID: <msg_1@marketplace.example>"),
            "{raw}"
        );
        assert!(raw.contains("Approved."), "{raw}");
        assert!(parse_from("not an address").is_err());
        assert!(Mailer::new(Some("gopher://mail.example.com"), Path::new("/nonexistent")).is_err());
        let bad = Email {
            to: "nobody".into(),
            ..email
        };
        assert!(build(&from, "msg_2", &bad, SystemTime::UNIX_EPOCH).is_err());
    }
}
