//! Our own Postgres, Redis and RabbitMQ: started from the installed binaries on
//! ports of our own, killed and started again, never the machine's.

use flashtix_chaos::process::Process;
use flashtix_chaos::services::{answers, recipe, Ports};
use flashtix_model::Dependency;

#[tokio::test]
async fn each_dependency_starts_on_its_own_port_and_comes_back_after_a_kill() {
    let dir = std::env::temp_dir().join(format!("flashtix-services-{}", std::process::id()));
    let ports = Ports::free().unwrap();
    for dependency in Dependency::ALL {
        let port = ports.of(dependency);
        assert_ne!(port, Ports::STANDARD.of(dependency));
        let mut process = Process::new(
            dependency.name(),
            recipe(dependency, &dir, port).await.unwrap(),
        );
        process.start().await.unwrap();
        assert!(answers(port).await, "{} answers", dependency.name());
        process.kill().await.unwrap();
        assert!(!answers(port).await, "{} is gone", dependency.name());
        process.start().await.unwrap();
        assert!(answers(port).await, "{} is back", dependency.name());
        process
            .stop(std::time::Duration::from_secs(30))
            .await
            .unwrap();
    }
    assert!(
        answers(Ports::STANDARD.postgres).await,
        "the machine's own is untouched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
