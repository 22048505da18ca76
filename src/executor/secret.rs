//! `ApiKey`: the DashScope API key in a type that never shows itself. `Debug` and `Display` print
//! `***`; only the HTTP layer calls [`ApiKey::expose`].

use std::fmt;

#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_prints_itself() {
        let key = super::ApiKey::new("sk-canary");
        assert_eq!(format!("{key} {key:?}"), "*** ApiKey(***)");
    }
}
