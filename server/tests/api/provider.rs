//! The simulated payment provider under concurrent calls for the same orders.

use flashtix_server::runtime::config::ProviderSettings;
use flashtix_server::saga::payments::provider::{PaymentOutcome, Provider};
use uuid::Uuid;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_captures_of_one_order_at_once_both_hear_it_was_paid() {
    let app = spawn_app().await;
    // Nothing is declined: any answer but "succeeded" is a lie about money
    // that was taken.
    let provider =
        std::sync::Arc::new(Provider::new(app.pool.clone(), ProviderSettings::default()));
    for _ in 0..20 {
        let orders: Vec<(Uuid, i64)> = (0..200).map(|_| (Uuid::now_v7(), 2500)).collect();
        let calls = [(); 2].map(|()| {
            let (provider, orders) = (provider.clone(), orders.clone());
            tokio::spawn(async move { provider.capture(&orders).await })
        });
        for call in calls {
            let answers = call.await.unwrap().expect("the provider answers");
            // An error (asked again later) is honest; a decline is not.
            for outcome in answers.into_iter().flatten() {
                assert_eq!(
                    outcome,
                    PaymentOutcome::Succeeded,
                    "a paid order answered as declined"
                );
            }
        }
    }
}
