//! One order for one host, HTTP-01 through the plain-HTTP listener: new order, answer
//! each pending authorization, wait until ready, finalize with a fresh P-256 key's CSR,
//! fetch and check the chain, store it.

use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509};

use super::challenges::Challenges;
use super::storage::{self, Stored};

/// How long the server may take to validate the challenges, then to issue.
const VALIDATION: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
pub const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Why an order failed.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// The ACME problem type, when the server sent one.
    pub problem: Option<String>,
}

impl Failure {
    pub fn rate_limited(&self) -> bool {
        self.problem.as_deref() == Some(RATE_LIMITED)
    }

    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            problem: None,
        }
    }
}

impl From<instant_acme::Error> for Failure {
    fn from(e: instant_acme::Error) -> Failure {
        let problem = match &e {
            instant_acme::Error::Api(p) => p.r#type.clone(),
            _ => None,
        };
        Failure {
            message: e.to_string(),
            problem,
        }
    }
}

/// Orders, stores (in `dir/<host>/`) and returns a certificate for `host`. Challenge
/// answers are published in memory for this process's plain-HTTP listener and in `dir`
/// for the other replicas sharing it.
pub async fn order(
    account: &Account,
    host: &str,
    challenges: &Challenges,
    dir: &Path,
) -> Result<Stored, Failure> {
    let host_dir = dir.join(host);
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    // Answered until this order is done, whatever its outcome.
    let mut published = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(Failure::new(format!(
                    "authorization for {host} is {status:?}"
                )))
            }
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Failure::new("the server offers no http-01 challenge"))?;
        let key_authorization = challenge.key_authorization();
        let file = storage::publish_token(dir, &challenge.token, key_authorization.as_str())
            .map_err(|e| Failure::new(format!("cannot write the challenge answer: {e}")))?;
        published.push((
            challenges.publish(&challenge.token, key_authorization.as_str()),
            file,
        ));
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(&VALIDATION).await?;
    if status != OrderStatus::Ready {
        return Err(why_invalid(&mut order, status).await);
    }
    drop(published);
    let (key, csr) = key_and_csr(host).map_err(|e| Failure::new(format!("CSR: {e}")))?;
    order.finalize_csr(&csr).await?;
    let chain = order.poll_certificate(&VALIDATION).await?;
    let leaf = X509::from_pem(chain.as_bytes())
        .map_err(|_| Failure::new("the server sent no PEM certificate"))?;
    let matches = leaf
        .public_key()
        .map(|pk| pk.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(Failure::new("the certificate is not for the key sent"));
    }
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| Failure::new(format!("key: {e}")))?;
    storage::save_cert(&host_dir, chain.as_bytes(), &key_pem)
        .map_err(|e| Failure::new(format!("cannot store in {}: {e}", host_dir.display())))?;
    storage::stored(&host_dir, host)
        .ok_or_else(|| Failure::new("the stored certificate does not load"))
}

/// The server's reason for an order that did not become ready: the failed challenge's
/// error when there is one.
async fn why_invalid(order: &mut instant_acme::Order, status: OrderStatus) -> Failure {
    let mut found = order.state().error.clone();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if found.is_some() {
            break;
        }
        if let Ok(state) = authz.refresh().await {
            found = state.challenges.iter().find_map(|c| c.error.clone());
        }
    }
    match found {
        Some(problem) => Failure {
            message: format!("order {status:?}: {problem}"),
            problem: problem.r#type.clone(),
        },
        None => Failure::new(format!("order {status:?}")),
    }
}

/// A new P-256 key and a DER CSR for `host`.
fn key_and_csr(host: &str) -> Result<(PKey<Private>, Vec<u8>), openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut req = X509ReqBuilder::new()?;
    req.set_pubkey(&key)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, host)?;
    req.set_subject_name(&name.build())?;
    let mut extensions = Stack::new()?;
    extensions.push(
        SubjectAlternativeName::new()
            .dns(host)
            .build(&req.x509v3_context(None))?,
    )?;
    req.add_extensions(&extensions)?;
    req.sign(&key, MessageDigest::sha256())?;
    Ok((key, req.build().to_der()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_names_the_host() {
        let (key, der) = key_and_csr("voice.example.com").expect("csr");
        let req = openssl::x509::X509Req::from_der(&der).expect("parse");
        assert!(req.verify(&key).expect("verify"));
        let text = String::from_utf8(req.to_text().expect("text")).expect("utf8");
        assert!(text.contains("DNS:voice.example.com"), "{text}");
    }
}
