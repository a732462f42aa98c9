//! Each notice invariant on a true state and on broken ones.

use super::webhooks::tests_support::{delivered_of, signed_of};
use super::*;
use flashtix_model::notices::notice_id;

const DOMAIN: &str = "buyers.test";
const GRACE: Duration = Duration::from_secs(30);

fn order(ended: Ending, ago: f64) -> Order {
    Order {
        buyer: "buyer-1".into(),
        ended: Some(ended),
        ended_ago: ago,
        refunded_ago: None,
        has_webhook: true,
    }
}

fn mail(id: Uuid, ending: Ending) -> Mail {
    Mail {
        file: format!("{id}.{ending}"),
        message_id: format!("<{}@flashtix.test>", notice_id(id, ending)),
        order: id,
        ending,
        to: format!("buyer-1@{DOMAIN}"),
    }
}

#[test]
fn a_mail_of_an_ending_the_order_never_had_or_to_someone_else_is_a_lie() {
    let (paid, late) = (Uuid::now_v7(), Uuid::now_v7());
    let mut expired_then_refunded = order(Ending::Expired, 60.0);
    expired_then_refunded.refunded_ago = Some(50.0);
    let orders = HashMap::from([
        (paid, order(Ending::Confirmed, 60.0)),
        (late, expired_then_refunded),
    ]);
    let truth = [
        mail(paid, Ending::Confirmed),
        mail(late, Ending::Expired),
        mail(late, Ending::Refunded),
    ];
    assert_eq!(notices_true(&truth, &orders, DOMAIN).verdict, Verdict::Pass);

    let lie = [mail(late, Ending::Confirmed)];
    let found = notices_true(&lie, &orders, DOMAIN);
    assert_eq!(found.verdict, Verdict::Fail, "{found:?}");
    assert!(
        found.examples[0].contains("ended EXPIRED then REFUNDED"),
        "{found:?}"
    );

    let mut elsewhere = mail(paid, Ending::Confirmed);
    elsewhere.to = format!("buyer-2@{DOMAIN}");
    assert_eq!(
        notices_true(&[elsewhere], &orders, DOMAIN).verdict,
        Verdict::Fail
    );
}

#[test]
fn a_resend_under_the_same_id_is_counted_and_a_second_id_fails() {
    let id = Uuid::now_v7();
    let once = [mail(id, Ending::Confirmed), mail(id, Ending::Confirmed)];
    let found = notices_once(&once);
    assert_eq!(found.verdict, Verdict::Pass, "{found:?}");
    assert!(found.detail.contains("1 sent again"), "{found:?}");

    let mut other = mail(id, Ending::Confirmed);
    other.message_id = "<another@flashtix.test>".into();
    let found = notices_once(&[mail(id, Ending::Confirmed), other]);
    assert_eq!(found.verdict, Verdict::Fail, "{found:?}");
}

#[test]
fn a_missing_mail_waits_out_the_grace_or_a_down_server_then_fails() {
    let none = HashSet::new();
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    let orders = HashMap::from([
        (old, order(Ending::Cancelled, 45.0)),
        (new, order(Ending::Expired, 2.0)),
    ]);
    let all = [mail(old, Ending::Cancelled), mail(new, Ending::Expired)];
    assert_eq!(
        notices_sent(&all, &orders, &none, GRACE, false).verdict,
        Verdict::Pass
    );

    let recent_missing = [mail(old, Ending::Cancelled)];
    assert_eq!(
        notices_sent(&recent_missing, &orders, &none, GRACE, false).verdict,
        Verdict::Unknown
    );

    let old_missing = [mail(new, Ending::Expired)];
    let found = notices_sent(&old_missing, &orders, &none, GRACE, false);
    assert_eq!(found.verdict, Verdict::Fail, "{found:?}");
    assert!(
        found.examples[0].contains("no CANCELLED mail 45 s"),
        "{found:?}"
    );

    let found = notices_sent(&old_missing, &orders, &none, GRACE, true);
    assert_eq!(found.verdict, Verdict::Unknown, "{found:?}");
    assert!(found.detail.contains("does not answer"), "{found:?}");

    // One the sale holds as taken is lost, whatever the server is now.
    let taken = HashSet::from([(old, Ending::Cancelled)]);
    let found = notices_sent(&old_missing, &orders, &taken, GRACE, true);
    assert_eq!(found.verdict, Verdict::Fail, "{found:?}");
    assert!(found.examples[0].contains("holds it sent"), "{found:?}");
}

#[test]
fn a_delivery_that_does_not_verify_or_names_another_fails() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let id = Uuid::now_v7();
    assert_eq!(
        signed_of(secret, id, Ending::Confirmed, |_| {}).verdict,
        Verdict::Pass
    );
    let forged = signed_of(secret, id, Ending::Confirmed, |d| d.body.push(' '));
    assert_eq!(forged.verdict, Verdict::Fail, "{forged:?}");
    let renamed = signed_of(secret, id, Ending::Confirmed, |d| {
        d.id = notice_id(id, Ending::Expired)
    });
    assert_eq!(renamed.verdict, Verdict::Fail, "{renamed:?}");
}

#[test]
fn an_ending_not_taken_dead_lettered_or_told_wrong_fails() {
    let id = Uuid::now_v7();
    let orders = HashMap::from([(id, order(Ending::Confirmed, 60.0))]);
    let taken = delivered_of(&orders, &[(id, Ending::Confirmed, 200)], None, false);
    assert_eq!(taken.verdict, Verdict::Pass, "{taken:?}");
    let refused = delivered_of(&orders, &[(id, Ending::Confirmed, 500)], None, false);
    assert_eq!(refused.verdict, Verdict::Fail, "{refused:?}");
    let waiting = delivered_of(&orders, &[], None, true);
    assert_eq!(waiting.verdict, Verdict::Unknown, "{waiting:?}");
    let dead = delivered_of(&orders, &[], Some("answered 500"), true);
    assert_eq!(dead.verdict, Verdict::Fail, "{dead:?}");
    assert!(dead.examples[0].contains("answered 500"), "{dead:?}");
    let lie = delivered_of(
        &orders,
        &[(id, Ending::Confirmed, 200), (id, Ending::Cancelled, 200)],
        None,
        false,
    );
    assert_eq!(lie.verdict, Verdict::Fail, "{lie:?}");
}
