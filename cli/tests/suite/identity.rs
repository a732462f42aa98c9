//! Keys and tokens from the CLI: `flashtix keys init|rotate` and `flashtix
//! token` make what the sale verifies, and a storm buys as the subjects of
//! the tokens it is given.

use std::os::unix::fs::PermissionsExt;

use crate::common::{assert_exit, stderr, stdout, Sale};
use flashtix_server::identity::keys::PublicKeys;
use flashtix_server::identity::{Access, Algorithm, Verifier};
use serde_json::Value;

/// The verifier of the public keys in `dir`.
fn verifier(dir: &std::path::Path) -> Verifier {
    let keys = PublicKeys::read(&dir.join("jwks.json"), Algorithm::EdDSA).expect("the keys read");
    Verifier::with_keys(keys, Algorithm::EdDSA, "flashtix", "flashtix")
}

#[tokio::test]
async fn keys_made_rotated_and_tokens_signed_by_the_cli_verify() {
    let sale = Sale::new().await;
    let dir = sale.dir.join("keys");
    let dir_text = dir.display().to_string();
    assert_exit(&sale.run(&["keys", "init", "--dir", &dir_text]), 0);
    let private = dir.join("signing-key.pem");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is its owner's alone");
    let pair = std::fs::read(&private).unwrap();
    let again = sale.run(&["keys", "init", "--dir", &dir_text]);
    assert_exit(&again, 0);
    assert!(
        stdout(&again).contains("already holds a key pair"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::read(&private).unwrap(),
        pair,
        "an init again keeps the pair"
    );

    let key = private.display().to_string();
    let sign = |args: &[&str]| {
        let mut all = vec!["token", "--signing-key", &key];
        all.extend(args);
        let output = sale.run(&all);
        assert_exit(&output, 0);
        stdout(&output)
    };
    let old = sign(&["--sub", "alice", "--role", "organizer"]);
    let caller = verifier(&dir)
        .verify(old.trim())
        .expect("the old key's token verifies");
    assert_eq!(
        (&*caller.subject, caller.access),
        ("alice", Access::Organizer)
    );

    assert_exit(&sale.run(&["keys", "rotate", "--dir", &dir_text]), 0);
    let set: Value =
        serde_json::from_slice(&std::fs::read(dir.join("jwks.json")).unwrap()).unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 2, "{set}");
    assert_ne!(std::fs::read(&private).unwrap(), pair, "a new signing key");
    let new = sign(&["--sub", "bob"]);
    // The new token is the new key's: its header names the second kid.
    let header = new.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], set["keys"][1]["kid"], "{header}");
    assert_ne!(set["keys"][0]["kid"], set["keys"][1]["kid"]);
    let verifier = verifier(&dir);
    assert_eq!(&*verifier.verify(old.trim()).unwrap().subject, "alice");
    assert_eq!(&*verifier.verify(new.trim()).unwrap().subject, "bob");

    let many = sign(&["--sub", "fan", "--count", "3"]);
    let subjects: Vec<String> = many
        .lines()
        .map(|token| verifier.verify(token).unwrap().subject.to_string())
        .collect();
    assert_eq!(subjects, ["fan-0", "fan-1", "fan-2"]);

    // Half a pair is nobody's: init refuses to guess.
    std::fs::remove_file(dir.join("jwks.json")).unwrap();
    let half = sale.run(&["keys", "init", "--dir", &dir_text]);
    assert_exit(&half, 2);
    assert!(
        stderr(&half).contains("half a key pair"),
        "{}",
        stderr(&half)
    );
}

#[tokio::test]
async fn a_storm_buys_as_the_subjects_of_the_tokens_it_is_given() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "100", "--max-per-user", "4"]);
    let event = events[0]["id"].to_string();
    let server = sale.serve("all");
    // Signed with the test sale's secret (the environment names it).
    let tokens = sale.run(&["token", "--sub", "fan", "--count", "40"]);
    assert_exit(&tokens, 0);
    let file = sale.dir.join("tokens.txt");
    std::fs::write(&file, stdout(&tokens)).unwrap();
    let history = sale.dir.join("history.jsonl");
    let storm = sale
        .run_in_background(&[
            "storm",
            "--target",
            &server.url,
            "--event",
            &event,
            "--rate",
            "200",
            "--buyers",
            "40",
            "--tokens",
            &file.display().to_string(),
            "--history",
            &history.display().to_string(),
        ])
        .await;
    assert_exit(&storm, 0);
    let text = std::fs::read_to_string(&history).unwrap();
    let mut buyers: Vec<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["user_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    buyers.sort();
    buyers.dedup();
    let mut expected: Vec<String> = (0..40).map(|n| format!("fan-{n}")).collect();
    expected.sort();
    assert_eq!(buyers, expected, "each purchase a token's subject");
    let tables = format!("{}{}", stdout(&storm), stderr(&storm));
    assert!(
        tables.contains("orders_owned_by_askers"),
        "the storm's check judged who owns what: {tables}"
    );
}
