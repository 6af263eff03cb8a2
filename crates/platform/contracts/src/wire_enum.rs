//! [`wire_enum!`](crate::wire_enum): the one way an enum of this workspace gets its wire
//! spelling, its list of values, `Display` and `FromStr`.

/// Declares an enum whose every value has one fixed spelling on the wire, in the
/// database or as a metric label, with:
/// - `ALL`, every value in declaration order;
/// - `const fn as_str(self) -> &'static str`, its spelling;
/// - `Display` (the spelling);
/// - with `/ Error("noun")` after the name, also `FromStr` (exact spelling only), whose
///   error is that struct, holding the text that named no value (its message:
///   `unknown <noun> "<text>"`). Without it (metric labels, which are never read back),
///   no `FromStr`.
///
/// ```
/// contracts::wire_enum! {
///     /// A colour.
///     pub enum Colour / UnknownColour("colour") {
///         /// Red.
///         Red = "red",
///         /// Dark blue.
///         DarkBlue = "dark_blue",
///     }
/// }
/// assert_eq!(Colour::DarkBlue.as_str(), "dark_blue");
/// assert_eq!("red".parse::<Colour>(), Ok(Colour::Red));
/// assert_eq!(
///     "green".parse::<Colour>().unwrap_err().to_string(),
///     r#"unknown colour "green""#
/// );
/// assert_eq!(Colour::ALL.len(), 2);
///
/// contracts::wire_enum! {
///     /// A label only.
///     pub enum Stage {
///         /// Reading.
///         Read = "read",
///     }
/// }
/// assert_eq!(Stage::Read.to_string(), "read");
/// ```
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident / $error:ident($noun:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal ),+ $(,)?
        }
    ) => {
        $crate::wire_enum! {
            $(#[$meta])*
            $vis enum $name {
                $( $(#[$vmeta])* $variant = $spelling ),+
            }
        }

        #[doc = concat!("A string that names no ", $noun, ".")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        $vis struct $error(pub String);

        impl ::std::fmt::Display for $error {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "unknown {} {:?}", $noun, self.0)
            }
        }

        impl ::std::error::Error for $error {}

        impl ::std::str::FromStr for $name {
            type Err = $error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $spelling => Ok(Self::$variant), )+
                    _ => Err($error(s.to_owned())),
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            /// The wire (and database, and metric label) spelling.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $spelling ),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::WireEnum for $name {
            const ALL: &'static [Self] = &Self::ALL;

            fn as_str(self) -> &'static str {
                Self::as_str(self)
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// What every enum declared with [`wire_enum!`] is: a fixed set of values with a spelling
/// each, numbered in declaration order. Code that works over any of them (one counter per
/// value, say) takes this.
pub trait WireEnum: Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The value's spelling.
    fn as_str(self) -> &'static str;
    /// The value's place in [`ALL`](Self::ALL).
    fn index(self) -> usize;
}
