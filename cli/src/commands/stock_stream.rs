//! A client of the sale's live stock stream (`GET /events/{id}/stream`):
//! its messages as they come, and the reconnection with `Last-Event-ID`
//! the stream asks for. `watch` and the storm's dashboard both follow it.

use std::time::Duration;

/// How long to wait before reconnecting (the stream's own `retry:` hint).
pub const RETRY: Duration = Duration::from_secs(2);

/// One message of the stream: its `id:`, `event:` and `data:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub kind: String,
    pub data: String,
}

/// The message in `bytes` (one, without its blank line); `None` for a
/// comment, the `retry:` hint, or anything without an id and data.
pub fn parse(bytes: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (mut id, mut kind, mut data) = (None, String::new(), None);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data = Some(value.trim_start().to_owned());
        }
    }
    Some(Message {
        id: id?,
        kind,
        data: data?,
    })
}

/// Follows `event`'s stream for ever, from the base URL `base` gives before
/// each connection (`None`: no process to ask yet, look again after
/// `idle`): `told` hears each message in order, `open` whether the stream
/// is open. After a cut it reconnects with the last id, so nothing is missed.
pub async fn follow(
    client: reqwest::Client,
    event: i64,
    mut base: impl FnMut() -> Option<String>,
    mut told: impl FnMut(Message),
    mut open: impl FnMut(bool),
    idle: Duration,
) {
    let mut last_id: Option<String> = None;
    loop {
        let Some(url) = base() else {
            tokio::time::sleep(idle).await;
            continue;
        };
        let mut request = client
            .get(format!("{url}/events/{event}/stream"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        if let Ok(mut response) = request.send().await {
            if response.status().is_success() {
                open(true);
                let mut unread: Vec<u8> = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    unread.extend_from_slice(&chunk);
                    while let Some(end) = unread.windows(2).position(|two| two == b"\n\n") {
                        let bytes: Vec<u8> = unread.drain(..end + 2).collect();
                        if let Some(message) = parse(&bytes) {
                            last_id = Some(message.id.clone());
                            told(message);
                        }
                    }
                }
                open(false);
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_gives_its_id_kind_and_data_and_a_comment_gives_nothing() {
        let message = parse(b"id: 7\nevent: sold_out\ndata: {\"available\":0}\n\n");
        assert_eq!(
            message,
            Some(Message {
                id: "7".into(),
                kind: "sold_out".into(),
                data: "{\"available\":0}".into(),
            })
        );
        assert_eq!(parse(b": heartbeat\n\n"), None);
        assert_eq!(parse(b"retry: 2000\n\n"), None);
    }
}
