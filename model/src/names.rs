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

/// What [`named!`](crate::named) and [`one_of!`](crate::one_of) both write
/// from a type's `name` and `named`: `Display`, `FromStr` and `Serialize`.
#[doc(hidden)]
#[macro_export]
macro_rules! __name_traits {
    ($ty:ident, $what:literal) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;

            fn from_str(name: &str) -> ::core::result::Result<Self, Self::Err> {
                Self::named(name).ok_or_else(|| $crate::names::UnknownName {
                    what: $what,
                    name: ::std::borrow::ToOwned::to_owned(name),
                })
            }
        }

        impl $crate::__serde::Serialize for $ty {
            fn serialize<S: $crate::__serde::Serializer>(
                &self,
                to: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                to.serialize_str(self.name())
            }
        }
    };
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
            pub fn named(name: &str) -> ::core::option::Option<Self> {
                Self::ALL.into_iter().find(|case| case.name() == name)
            }

            /// Its place in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        $crate::__name_traits!($ty, $what);

        impl<'de> $crate::__serde::Deserialize<'de> for $ty {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(from: D) -> ::core::result::Result<Self, D::Error> {
                let name = <::std::borrow::Cow<'de, str> as $crate::__serde::Deserialize<'de>>::deserialize(from)?;
                Self::named(&name).ok_or_else(|| {
                    $crate::__serde::de::Error::unknown_variant(&name, &[$($name),+])
                })
            }
        }
    };
}

/// Declares an enum each case of which holds a case of another
/// [`named!`](crate::named) enum, and is named by it: a drill's target is a
/// role or a dependency, and parses from either's names.
///
/// ```ignore
/// one_of! {
///     /// What a drill can break.
///     pub enum Target("a drill target") {
///         Role(Role),
///         Dependency(Dependency),
///     }
/// }
/// ```
#[macro_export]
macro_rules! one_of {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident($what:literal) {
            $( $(#[$case_meta:meta])* $case:ident($inner:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $ty {
            $( $(#[$case_meta])* $case($inner) ),+
        }

        impl $ty {
            /// Its name: the name of the case it holds.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$case(inner) => inner.name()),+
                }
            }

            /// The case of this name, looked for in each enum in turn.
            pub fn named(name: &str) -> ::core::option::Option<Self> {
                $(
                    if let ::core::option::Option::Some(inner) = <$inner>::named(name) {
                        return ::core::option::Option::Some(Self::$case(inner));
                    }
                )+
                ::core::option::Option::None
            }

            /// Every case: each enum's, in the order declared.
            pub fn all() -> impl Iterator<Item = Self> {
                ::std::iter::empty()
                    $( .chain(<$inner>::ALL.into_iter().map(Self::$case)) )+
            }
        }

        $(
            impl ::core::convert::From<$inner> for $ty {
                fn from(inner: $inner) -> Self {
                    Self::$case(inner)
                }
            }
        )+

        $crate::__name_traits!($ty, $what);

        impl<'de> $crate::__serde::Deserialize<'de> for $ty {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(from: D) -> ::core::result::Result<Self, D::Error> {
                let name = <::std::borrow::Cow<'de, str> as $crate::__serde::Deserialize<'de>>::deserialize(from)?;
                name.parse().map_err(|wrong: $crate::names::UnknownName| {
                    let known: ::std::vec::Vec<&str> = Self::all().map(Self::name).collect();
                    $crate::__serde::de::Error::custom(::std::format!(
                        "{wrong} (one of: {})",
                        known.join(", ")
                    ))
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

    crate::named! {
        /// Another.
        enum Sound("a sound") {
            Bell = "bell",
        }
    }

    crate::one_of! {
        /// Either.
        enum Signal("a signal") {
            Light(Light),
            Sound(Sound),
        }
    }

    #[test]
    fn a_case_of_one_of_is_named_by_what_it_holds() {
        let all: Vec<Signal> = Signal::all().collect();
        assert_eq!(
            all,
            [
                Signal::Light(Light::Red),
                Signal::Light(Light::Green),
                Signal::Sound(Sound::Bell)
            ]
        );
        for signal in all {
            let name = signal.name();
            assert_eq!(signal.to_string(), name);
            assert_eq!(name.parse::<Signal>(), Ok(signal));
            assert_eq!(
                serde_json::from_str::<Signal>(&format!("\"{name}\"")).unwrap(),
                signal
            );
            assert_eq!(
                serde_json::to_string(&signal).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert_eq!(Signal::from(Sound::Bell), Signal::Sound(Sound::Bell));
        assert_eq!(Sound::Bell.index(), 0);
        let wrong = "horn".parse::<Signal>().unwrap_err();
        assert_eq!(wrong.to_string(), "\"horn\" is not a signal");
        let json = serde_json::from_str::<Signal>("\"horn\"")
            .unwrap_err()
            .to_string();
        assert!(
            json.contains("\"horn\" is not a signal (one of: red, green_light, bell)"),
            "{json}"
        );
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
