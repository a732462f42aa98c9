//! Who runs a sale and what it stands on: the roles a server process can
//! run, the services they depend on, and the processes a whole sale runs
//! (the API twice), named once for the server, the drivers and the drills.

crate::named! {
    /// What a server process runs. Every role can run alone, so a drill can
    /// kill one.
    pub enum Role("a role") {
        Api = "api",
        Sweeper = "sweeper",
        Relay = "relay",
        Payments = "payments",
        Orders = "orders",
        Notifications = "notifications",
    }
}

impl Role {
    /// What the role does, in a line (for `--help`).
    pub const fn duty(self) -> &'static str {
        match self {
            Role::Api => "The HTTP API, with the reconciler that repairs Redis from Postgres",
            Role::Sweeper => "The expiry sweeper: unpaid orders past their hold expire",
            Role::Relay => "The outbox relay: publishes committed messages to RabbitMQ",
            Role::Payments => "The payment worker: charges orders through the provider",
            Role::Orders => "The order worker: confirms, cancels or refunds orders after payment",
            Role::Notifications => {
                "Tells each buyer (by mail) and organizer (by webhook) how each order ended"
            }
        }
    }

    /// The first process of a whole sale that runs it: the one a fault on
    /// the role hits.
    pub fn first_process(self) -> &'static str {
        processes_of(self).next().expect("every role has a process")
    }
}

crate::named! {
    /// A service the sale stands on.
    pub enum Dependency("a dependency") {
        Postgres = "postgres",
        Redis = "redis",
        Rabbitmq = "rabbitmq",
    }
}

crate::named! {
    /// Who the sale's notices go to, as a drill sees them: the mail server
    /// buyers' mail goes through, and the organizer's webhook receiver.
    pub enum Receiver("a notices' receiver") {
        Mail = "mail",
        Webhooks = "webhooks",
    }
}

/// One process of a whole sale: the role it runs, under a name of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// As the Compose file names its service, and a drill its log.
    pub name: &'static str,
    pub role: Role,
}

/// The processes of a whole sale, as `flashtix up` and the drills run it:
/// one for each role, and the API twice, so that one API can die while the
/// other answers.
pub const PROCESSES: [Process; 7] = [
    Process {
        name: "api1",
        role: Role::Api,
    },
    Process {
        name: "api2",
        role: Role::Api,
    },
    Process {
        name: "relay",
        role: Role::Relay,
    },
    Process {
        name: "payments",
        role: Role::Payments,
    },
    Process {
        name: "orders",
        role: Role::Orders,
    },
    Process {
        name: "sweeper",
        role: Role::Sweeper,
    },
    Process {
        name: "notifications",
        role: Role::Notifications,
    },
];

/// The names of [`PROCESSES`], in their order.
pub const PROCESS_NAMES: [&str; PROCESSES.len()] = {
    let mut names = [""; PROCESSES.len()];
    let mut i = 0;
    while i < PROCESSES.len() {
        names[i] = PROCESSES[i].name;
        i += 1;
    }
    names
};

/// The processes that run `role`, by name.
pub fn processes_of(role: Role) -> impl Iterator<Item = &'static str> {
    PROCESSES
        .iter()
        .filter(move |process| process.role == role)
        .map(|process| process.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_runs_and_no_two_things_share_a_name() {
        for role in Role::ALL {
            assert!(PROCESSES.iter().any(|p| p.role == role), "{role}");
        }
        assert_eq!(Role::Api.first_process(), "api1");
        let mut names: Vec<&str> = PROCESSES.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PROCESSES.len(), "{names:?}");
        for dependency in Dependency::ALL {
            assert_eq!(Role::named(dependency.name()), None);
            assert!(!names.contains(&dependency.name()), "{dependency}");
        }
        for receiver in Receiver::ALL {
            assert_eq!(Role::named(receiver.name()), None);
            assert_eq!(Dependency::named(receiver.name()), None);
            assert!(!names.contains(&receiver.name()), "{receiver}");
        }
    }
}
