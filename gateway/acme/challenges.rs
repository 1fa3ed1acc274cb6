//! HTTP-01 answers in progress: token → key authorization, written by an order and read
//! by the plain-HTTP listener. A handful of entries, touched only by ACME validation
//! requests, never by proxied traffic.

use std::collections::HashMap;

use parking_lot::RwLock;

#[derive(Debug, Default)]
pub struct Challenges {
    tokens: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// The key authorization to answer for `token`, if an order awaits it.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.tokens.read().get(token).cloned()
    }

    /// Publishes a token until the returned guard is dropped.
    pub fn publish(&self, token: &str, key_authorization: &str) -> Published<'_> {
        self.tokens
            .write()
            .insert(token.to_string(), key_authorization.to_string());
        Published {
            challenges: self,
            token: token.to_string(),
        }
    }
}

/// Withdraws its token when dropped (order done, failed or cancelled).
pub struct Published<'a> {
    challenges: &'a Challenges,
    token: String,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.challenges.tokens.write().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_answered_while_published() {
        let c = Challenges::default();
        {
            let _p = c.publish("tok", "tok.thumb");
            assert_eq!(c.answer("tok").as_deref(), Some("tok.thumb"));
            assert_eq!(c.answer("other"), None);
        }
        assert_eq!(c.answer("tok"), None);
    }
}
