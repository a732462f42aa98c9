//! What the receivers hold: the mails in a Maildir, and the webhook
//! receiver's record of every POST it got. These are the witnesses of the
//! notice invariants, not the sale's own tables.

use std::collections::BTreeMap;
use std::path::Path;

use uuid::Uuid;

use crate::notices::mail::{ENDING_HEADER, ORDER_HEADER};
use flashtix_model::notices::{parse_notice_id, Ending};

/// One mail found in the Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Its file name, to point at it.
    pub file: String,
    pub message_id: String,
    pub order: Uuid,
    pub ending: Ending,
    pub to: String,
}

/// Reads every delivered mail of the Maildir (`new/` and `cur/`) that says
/// which order and ending it is about; other mail is not the sale's and is
/// left out. An error: the Maildir cannot be read.
pub fn mails(maildir: &Path) -> std::io::Result<Vec<Mail>> {
    let mut mails = Vec::new();
    for folder in ["new", "cur"] {
        let entries = match std::fs::read_dir(maildir.join(folder)) {
            Ok(entries) => entries,
            Err(error) if folder == "cur" && error.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let text = std::fs::read(entry.path())?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(mail) = mail(&file, &String::from_utf8_lossy(&text)) {
                mails.push(mail);
            }
        }
    }
    mails.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(mails)
}

/// A mail's headers, unfolded, by lower-case name (the last of a name).
fn headers(text: &str) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(name) = &last {
                let value: &mut String = headers.entry(name.clone()).or_default();
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            headers.insert(name.clone(), value.trim().to_owned());
            last = Some(name);
        }
    }
    headers
}

/// The mail in `text`, if it names its order and ending (by its headers,
/// or failing them by its Message-ID).
fn mail(file: &str, text: &str) -> Option<Mail> {
    let headers = headers(text);
    let message_id = headers.get("message-id").cloned().unwrap_or_default();
    let named = || {
        let order = headers
            .get(&ORDER_HEADER.to_ascii_lowercase())?
            .parse()
            .ok()?;
        let ending = Ending::named(headers.get(&ENDING_HEADER.to_ascii_lowercase())?)?;
        Some((order, ending))
    };
    let from_id = || {
        let inner = message_id.trim_start_matches('<');
        parse_notice_id(inner.split('@').next()?)
    };
    let (order, ending) = named().or_else(from_id)?;
    let to = headers.get("to").cloned().unwrap_or_default();
    Some(Mail {
        file: file.to_owned(),
        message_id,
        order,
        ending,
        to: to.trim_matches(['<', '>']).to_owned(),
    })
}

/// One POST the webhook receiver got, as it recorded it (one JSON object a
/// line): the delivery's headers, its body as received, and the status it
/// answered.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub status: u16,
}

/// Reads the webhook receiver's record. A line that is not a delivery is
/// an error naming it: a record that cannot be read proves nothing.
pub fn deliveries(record: &Path) -> anyhow::Result<Vec<Delivery>> {
    let text = std::fs::read_to_string(record)?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str(line).map_err(|error| {
                anyhow::anyhow!("{} line {}: {error}", record.display(), number + 1)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_is_known_by_its_headers_or_its_message_id_and_others_are_left_out() {
        let order = Uuid::now_v7();
        let text = format!(
            "Message-ID: <{order}.expired@flashtix.test>\r\nTo: buyer-1@b.test\r\n\
             X-Flashtix-Order: {order}\r\nX-Flashtix-Ending:\r\n EXPIRED\r\n\r\nbody: X-Flashtix-Ending: CONFIRMED\r\n"
        );
        let first = mail("1.eml", &text).unwrap();
        assert_eq!((first.order, first.ending), (order, Ending::Expired));
        assert_eq!(first.to, "buyer-1@b.test");
        let bare = format!("Message-ID: <{order}.refunded@x>\n\nhello\n");
        assert_eq!(mail("2.eml", &bare).unwrap().ending, Ending::Refunded);
        assert_eq!(mail("3.eml", "Subject: hello\n\nnot ours\n"), None);
    }
}
