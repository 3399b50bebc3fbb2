//! The route dictionary: routes a server and its clients agree to send as 2-byte codes.
//!
//! It comes from configuration only (Pitaya's `app.SetDictionary`) and is shipped to clients in
//! the handshake. Kiwano never fills it automatically: libpitaya clients cannot resolve codes
//! for routes they were not told about.

use std::collections::HashMap;

/// Why a dictionary was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DictionaryError {
    /// Two routes share one code.
    #[error("route dictionary code {code} is used by both {first:?} and {second:?}")]
    DuplicateCode {
        /// The code.
        code: u16,
        /// One route.
        first: String,
        /// The other route.
        second: String,
    },
    /// An empty route (after trimming).
    #[error("route dictionary has an empty route")]
    EmptyRoute,
    /// The same route twice (after trimming).
    #[error("route dictionary has {0:?} twice")]
    DuplicateRoute(String),
}

/// Routes ↔ codes, both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDictionary {
    routes: HashMap<String, u16>,
    codes: HashMap<u16, String>,
}

impl RouteDictionary {
    /// Builds a dictionary from `(route, code)` pairs; routes are trimmed.
    ///
    /// # Errors
    /// A duplicate route or code, or an empty route.
    pub fn new<I, S>(entries: I) -> Result<Self, DictionaryError>
    where
        I: IntoIterator<Item = (S, u16)>,
        S: AsRef<str>,
    {
        let mut dict = Self::default();
        for (route, code) in entries {
            let route = route.as_ref().trim().to_owned();
            if route.is_empty() {
                return Err(DictionaryError::EmptyRoute);
            }
            if dict.routes.contains_key(&route) {
                return Err(DictionaryError::DuplicateRoute(route));
            }
            if let Some(first) = dict.codes.get(&code) {
                return Err(DictionaryError::DuplicateCode { code, first: first.clone(), second: route });
            }
            dict.routes.insert(route.clone(), code);
            dict.codes.insert(code, route);
        }
        Ok(dict)
    }

    /// The code of a route, if it has one.
    pub fn code(&self, route: &str) -> Option<u16> {
        self.routes.get(route).copied()
    }

    /// The route of a code, if known.
    pub fn route(&self, code: u16) -> Option<&str> {
        self.codes.get(&code).map(String::as_str)
    }

    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// All `(route, code)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.routes.iter().map(|(r, c)| (r.as_str(), *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_and_duplicates() {
        let d = RouteDictionary::new([(" a.b ", 1u16), ("onMessage", 2)]).unwrap();
        assert_eq!(d.code("a.b"), Some(1));
        assert_eq!(d.route(2), Some("onMessage"));
        assert!(matches!(RouteDictionary::new([("a", 1u16), ("b", 1)]), Err(DictionaryError::DuplicateCode { .. })));
        assert!(matches!(RouteDictionary::new([("a", 1u16), ("a ", 2)]), Err(DictionaryError::DuplicateRoute(_))));
    }
}
