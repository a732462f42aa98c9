//! The one way an enum of flashtix gets its names: [`named!`](crate::named)
//! writes the enum with a name for each case, and from that one list its
//! `ALL`, `name`, `named`, `index`, `Display`, `FromStr` and its serde form
//! (the name as a string), so no second spelling of the names can drift.

/// A name that is none of an enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not {what}")]
pub struct UnknownName {
    /// What was expected, with its article: `an order status`.
    pub what: &'static str,
    pub name: String,
}

/// Declares a fieldless enum and its names:
///
/// ```ignore
/// named! {
///     /// An order's status.
///     pub enum OrderStatus("an order status") {
///         Pending = "PENDING",
///         Confirmed = "CONFIRMED",
///     }
/// }
/// ```
#[macro_export]
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident($what:literal) {
            $( $(#[$case_meta:meta])* $case:ident = $name:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $ty {
            $( $(#[$case_meta])* $case ),+
        }

        impl $ty {
            /// Every case, in the order declared.
            pub const ALL: [Self; [$($name),+].len()] = [$(Self::$case),+];

            /// Its name, as the JSON, the database and the reports write it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$case => $name),+
                }
            }

            /// The case of this name.
            pub fn named(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|case| case.name() == name)
            }

            /// Its place in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                Self::named(name).ok_or_else(|| $crate::names::UnknownName {
                    what: $what,
                    name: name.to_owned(),
                })
            }
        }

        impl $crate::__serde::Serialize for $ty {
            fn serialize<S: $crate::__serde::Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
                to.serialize_str(self.name())
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $ty {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(from: D) -> Result<Self, D::Error> {
                let name = <::std::borrow::Cow<'de, str>>::deserialize(from)?;
                Self::named(&name).ok_or_else(|| {
                    $crate::__serde::de::Error::unknown_variant(&name, &[$($name),+])
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::named! {
        /// A test enum.
        enum Light("a light") {
            Red = "red",
            /// The other one.
            Green = "green_light",
        }
    }

    #[test]
    fn each_case_has_one_name_everywhere() {
        assert_eq!(Light::ALL, [Light::Red, Light::Green]);
        for light in Light::ALL {
            let name = light.name();
            assert_eq!(light.to_string(), name);
            assert_eq!(name.parse::<Light>(), Ok(light));
            assert_eq!(
                serde_json::to_string(&light).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<Light>(&format!("\"{name}\"")).unwrap(),
                light
            );
        }
        assert_eq!(Light::Green.index(), 1);
        let wrong = "Green".parse::<Light>().unwrap_err();
        assert_eq!(wrong.to_string(), "\"Green\" is not a light");
        let json = serde_json::from_str::<Light>("\"blue\"")
            .unwrap_err()
            .to_string();
        assert!(
            json.contains("unknown variant `blue`") && json.contains("green_light"),
            "{json}"
        );
    }
}
