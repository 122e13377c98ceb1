//! Named webhooks: their `[webhooks.NAME]` tables in the config file, validated once at start-up
//! into a [`Webhook`] (a verifier, a mapping and where the delivery id comes from), and the steps
//! that turn one delivery into an event with a deterministic id.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use axum::http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::Value;
use tidings_core::event::{EventError, EventId, EventType, NewEvent};

use super::mapping::{
    check_pointer, text_at, DataRule, Mapping, MappingError, TopicTemplate, TypeRule,
};
use super::verify::{parse_signed_content, Encoding, GenericHmac, Secret, Verifier, VerifyError};

/// The verification scheme of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Standard,
    Stripe,
    Github,
    Hmac,
    Bearer,
}

/// A secret as written in the config file (`@PATH` reads a file); never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(redacted)")
    }
}

/// One template or several (the first is the canonical topic).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A `[webhooks.NAME]` table of the config file. Unknown keys, and keys that do not belong to
/// the chosen scheme, are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub scheme: Scheme,
    /// The HMAC key (`standard`: `whsec_` + base64; others: the text's bytes).
    pub secret: Option<SecretText>,
    /// The `bearer` scheme's token.
    pub token: Option<SecretText>,
    /// `hmac`: the header holding the signature.
    pub signature_header: Option<String>,
    /// `hmac`: `hex` (default) or `base64`.
    pub signature_encoding: Option<Encoding>,
    /// `hmac`: text before the signature, e.g. `sha256=`.
    pub signature_prefix: Option<String>,
    /// `hmac`: a header holding the Unix time of the signature.
    pub timestamp_header: Option<String>,
    /// `hmac`: what is signed, from `{body}` and `{timestamp}`.
    pub signed_content: Option<String>,
    /// How far a signature's timestamp may be from the hub's clock [default: 5m].
    pub tolerance: Option<String>,
    /// Topic template(s) over JSON pointers, e.g. `jobs/{/id}`.
    pub topic: OneOrMany,
    /// A fixed event type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A JSON pointer to the event type.
    pub type_from: Option<String>,
    /// Renames the values found at `type_from`.
    #[serde(default)]
    pub type_map: BTreeMap<String, String>,
    /// Refuse (422) a type value missing from `type_map` instead of keeping it as it is.
    #[serde(default)]
    pub type_map_strict: bool,
    /// Data fields (key → JSON pointer); absent: the whole body.
    pub data: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub private: bool,
    /// The header naming a delivery, so that a retry publishes once.
    pub delivery_id_header: Option<String>,
    /// A JSON pointer to the delivery's id, instead of a header.
    pub delivery_id_from: Option<String>,
    /// `github`, `hmac`: the event id comes from (a digest of) the signature instead of a
    /// delivery id, so a captured delivery replayed with a fresh delivery id is a duplicate. The
    /// price: two deliveries with the same body (and timestamp, if signed) are one event.
    #[serde(default)]
    pub id_from_signature: bool,
}

/// Where a delivery's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryId {
    Header(HeaderName),
    Pointer(String),
    /// A digest of the delivery's signature (`id_from_signature`): a replay is a duplicate.
    Signature,
    /// Every delivery is a new event (retries are not recognized).
    None,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Unverified(#[from] VerifyError),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("missing the delivery id header {0}")]
    MissingDeliveryId(String),
    #[error("the delivery id is not usable in an event id: {0}")]
    BadDeliveryId(EventError),
    #[error(transparent)]
    Unmappable(#[from] MappingError),
}

/// A validated webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub verifier: Verifier,
    pub mapping: Mapping,
    pub delivery: DeliveryId,
}

impl Webhook {
    /// Verifies a delivery and maps it to its event. The event id is
    /// `webhook:{name}:{delivery id}`, so a retried delivery has the id of the first.
    pub fn event(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<NewEvent, IngestError> {
        self.verifier.verify(headers, body, now)?;
        let raw = std::str::from_utf8(body)
            .map_err(|_| IngestError::NotJson("it is not valid UTF-8".into()))?;
        let payload: Value =
            serde_json::from_str(raw).map_err(|e| IngestError::NotJson(e.to_string()))?;
        let mut event = self.mapping.apply(&payload, raw)?;
        let delivery = match &self.delivery {
            DeliveryId::Header(name) => Some(
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| IngestError::MissingDeliveryId(name.to_string()))?
                    .to_owned(),
            ),
            DeliveryId::Pointer(pointer) => Some(text_at(&payload, pointer)?),
            // `new` allows it only for schemes that have a digest.
            DeliveryId::Signature => self
                .verifier
                .signature_digest(headers, body)
                .map(|digest| format!("sig:{digest}")),
            DeliveryId::None => None,
        };
        if let Some(delivery) = delivery {
            let id = format!("webhook:{}:{delivery}", self.name);
            event.id = Some(EventId::parse(&id).map_err(IngestError::BadDeliveryId)?);
        }
        Ok(event)
    }

    /// Validates one `[webhooks.NAME]` table.
    pub fn new(name: &str, config: WebhookConfig) -> anyhow::Result<Self> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("the name may hold only letters, digits, - and _");
        }
        let verifier = verifier(&config)?;
        let mapping = mapping(&config)?;
        if config.id_from_signature {
            if !matches!(config.scheme, Scheme::Github | Scheme::Hmac) {
                bail!(
                    "id_from_signature applies to scheme = \"github\" or \"hmac\" (standard and \
                     stripe sign their delivery id already; bearer has no signature)"
                );
            }
            if config.delivery_id_header.is_some() || config.delivery_id_from.is_some() {
                bail!("give id_from_signature or a delivery id, not both");
            }
        }
        let delivery = match (&config.delivery_id_header, &config.delivery_id_from) {
            _ if config.id_from_signature => DeliveryId::Signature,
            (Some(_), Some(_)) => bail!("give delivery_id_header or delivery_id_from, not both"),
            (Some(h), None) => DeliveryId::Header(header_name(h, "delivery_id_header")?),
            (None, Some(p)) => {
                check_pointer(p).map_err(|e| anyhow::anyhow!("delivery_id_from: {e}"))?;
                DeliveryId::Pointer(p.clone())
            }
            (None, None) => match config.scheme {
                Scheme::Standard => DeliveryId::Header(HeaderName::from_static("webhook-id")),
                Scheme::Github => DeliveryId::Header(HeaderName::from_static("x-github-delivery")),
                Scheme::Stripe => DeliveryId::Pointer("/id".into()),
                Scheme::Hmac | Scheme::Bearer => DeliveryId::None,
            },
        };
        Ok(Self {
            name: name.to_owned(),
            verifier,
            mapping,
            delivery,
        })
    }
}

/// Default window for a signature's timestamp: what Standard Webhooks and Stripe use.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

fn verifier(c: &WebhookConfig) -> anyhow::Result<Verifier> {
    let generic_keys = [
        ("signature_header", c.signature_header.is_some()),
        ("signature_encoding", c.signature_encoding.is_some()),
        ("signature_prefix", c.signature_prefix.is_some()),
        ("timestamp_header", c.timestamp_header.is_some()),
        ("signed_content", c.signed_content.is_some()),
    ];
    let (scheme_name, allowed): (&str, &[&str]) = match c.scheme {
        Scheme::Standard => ("standard", &["secret", "tolerance"]),
        Scheme::Stripe => ("stripe", &["secret", "tolerance"]),
        Scheme::Github => ("github", &["secret"]),
        Scheme::Hmac => (
            "hmac",
            &[
                "secret",
                "tolerance",
                "signature_header",
                "signature_encoding",
                "signature_prefix",
                "timestamp_header",
                "signed_content",
            ],
        ),
        Scheme::Bearer => ("bearer", &["token"]),
    };
    let given = [
        ("secret", c.secret.is_some()),
        ("token", c.token.is_some()),
        ("tolerance", c.tolerance.is_some()),
    ];
    for (key, set) in given.into_iter().chain(generic_keys) {
        if set && !allowed.contains(&key) {
            bail!("{key} does not apply to scheme = \"{scheme_name}\"");
        }
    }
    let secret_text = || -> anyhow::Result<String> {
        let text = c
            .secret
            .as_ref()
            .with_context(|| format!("scheme = \"{scheme_name}\" needs a secret"))?;
        read_secret(&text.0)
    };
    let tolerance = || -> anyhow::Result<Duration> {
        let Some(text) = &c.tolerance else {
            return Ok(DEFAULT_TOLERANCE);
        };
        let d = humantime::parse_duration(text)
            .map_err(|e| anyhow::anyhow!("tolerance: {e} (examples: 5m, 30s)"))?;
        if d.as_secs() == 0 {
            bail!("tolerance must be at least one second");
        }
        Ok(d)
    };
    Ok(match c.scheme {
        Scheme::Standard => Verifier::Standard {
            secret: Secret::standard(&secret_text()?)
                .map_err(|e| anyhow::anyhow!("secret: {e}"))?,
            tolerance: tolerance()?,
        },
        Scheme::Stripe => Verifier::Stripe {
            secret: plain_secret(secret_text()?)?,
            tolerance: tolerance()?,
        },
        Scheme::Github => Verifier::Github {
            secret: plain_secret(secret_text()?)?,
        },
        Scheme::Bearer => {
            let token = c
                .token
                .as_ref()
                .context("scheme = \"bearer\" needs a token")?;
            Verifier::Bearer {
                token: plain_secret(read_secret(&token.0)?)?,
            }
        }
        Scheme::Hmac => {
            let header = c
                .signature_header
                .as_deref()
                .context("scheme = \"hmac\" needs a signature_header")?;
            let timestamp = match &c.timestamp_header {
                Some(h) => Some((header_name(h, "timestamp_header")?, tolerance()?)),
                None if c.tolerance.is_some() => bail!("tolerance needs a timestamp_header"),
                None => None,
            };
            let default_content = if timestamp.is_some() {
                "{timestamp}.{body}"
            } else {
                "{body}"
            };
            let content = c.signed_content.as_deref().unwrap_or(default_content);
            Verifier::Hmac(GenericHmac {
                secret: plain_secret(secret_text()?)?,
                header: header_name(header, "signature_header")?,
                encoding: c.signature_encoding.unwrap_or_default(),
                prefix: c.signature_prefix.clone().unwrap_or_default(),
                content: parse_signed_content(content, timestamp.is_some())
                    .map_err(|e| anyhow::anyhow!(e))?,
                timestamp,
            })
        }
    })
}

fn mapping(c: &WebhookConfig) -> anyhow::Result<Mapping> {
    let templates = match &c.topic {
        OneOrMany::One(t) => vec![t.clone()],
        OneOrMany::Many(ts) => ts.clone(),
    };
    if templates.is_empty() {
        bail!("topic needs at least one template");
    }
    let topics = templates
        .iter()
        .map(|t| TopicTemplate::parse(t).map_err(|e| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let parse_type = |t: &str| EventType::parse(t).map_err(|e| anyhow::anyhow!("type {t:?}: {e}"));
    let kind = match (&c.kind, &c.type_from) {
        (Some(_), Some(_)) => bail!("give type or type_from, not both"),
        (Some(kind), None) => TypeRule::Fixed(parse_type(kind)?),
        (None, Some(pointer)) => {
            check_pointer(pointer).map_err(|e| anyhow::anyhow!("type_from: {e}"))?;
            let map = c
                .type_map
                .iter()
                .map(|(from, to)| Ok((from.clone(), parse_type(to)?)))
                .collect::<anyhow::Result<_>>()?;
            TypeRule::From {
                pointer: pointer.clone(),
                map,
                strict: c.type_map_strict,
            }
        }
        (None, None) => TypeRule::None,
    };
    if (!c.type_map.is_empty() || c.type_map_strict) && c.type_from.is_none() {
        bail!("type_map and type_map_strict need type_from");
    }
    let data = match &c.data {
        None => DataRule::Whole,
        Some(fields) => {
            for (key, pointer) in fields {
                check_pointer(pointer).map_err(|e| anyhow::anyhow!("data.{key}: {e}"))?;
            }
            DataRule::Fields(fields.clone())
        }
    };
    Ok(Mapping {
        topics,
        kind,
        data,
        private: c.private,
    })
}

fn header_name(name: &str, key: &str) -> anyhow::Result<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| anyhow::anyhow!("{key}: {name:?} is not a header name"))
}

/// A secret (or key) given inline, or read from the file it names with `@PATH`, without the
/// file's trailing newline.
pub(crate) fn read_secret(text: &str) -> anyhow::Result<String> {
    match text.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret file {path}"))?
            .trim_end_matches(['\r', '\n'])
            .to_owned()),
        None => Ok(text.to_owned()),
    }
}

fn plain_secret(text: String) -> anyhow::Result<Secret> {
    if text.is_empty() {
        bail!("the secret is empty");
    }
    Ok(Secret::new(text))
}

/// The configured webhooks, by name.
#[derive(Debug, Clone, Default)]
pub struct Webhooks(BTreeMap<String, Arc<Webhook>>);

impl Webhooks {
    /// Validates the `[webhooks.NAME]` tables of the config file.
    pub fn from_configs(configs: BTreeMap<String, WebhookConfig>) -> anyhow::Result<Self> {
        let mut webhooks = BTreeMap::new();
        for (name, config) in configs {
            let webhook = Webhook::new(&name, config).with_context(|| format!("webhook {name}"))?;
            webhooks.insert(name, Arc::new(webhook));
        }
        Ok(Self(webhooks))
    }

    /// Parses TOML holding only `[webhooks.NAME]` tables, as in the config file.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            #[serde(default)]
            webhooks: BTreeMap<String, WebhookConfig>,
        }
        let document: Document = toml::from_str(text).context("parsing webhooks")?;
        Self::from_configs(document.webhooks)
    }

    /// The webhook served at `/webhooks/{name}`.
    pub fn get(&self, name: &str) -> Option<&Arc<Webhook>> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::verify::tests::headers;

    fn parse(text: &str) -> anyhow::Result<Webhooks> {
        Webhooks::from_toml(text)
    }

    #[test]
    fn a_full_job_webhook() {
        let hooks = parse(
            r#"
[webhooks.gpu]
scheme = "standard"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
tolerance = "10m"
topic = ["jobs/{/id}", "users/{/user}/jobs"]
type_from = "/status"
type_map = { COMPLETED = "completed", FAILED = "failed", IN_PROGRESS = "progress" }
type_map_strict = true
private = true

[webhooks.gpu.data]
percent = "/progress"
url = "/output/url"
"#,
        )
        .unwrap();
        let gpu = hooks.get("gpu").unwrap();
        assert_eq!(gpu.mapping.topics.len(), 2);
        assert!(gpu.mapping.private);
        assert!(
            matches!(&gpu.mapping.kind, TypeRule::From { map, strict: true, .. } if map.len() == 3)
        );
        assert!(matches!(&gpu.mapping.data, DataRule::Fields(f) if f.len() == 2));
        assert!(matches!(
            gpu.verifier,
            Verifier::Standard { tolerance, .. } if tolerance == Duration::from_secs(600)
        ));
        assert_eq!(
            gpu.delivery,
            DeliveryId::Header(HeaderName::from_static("webhook-id"))
        );
        assert!(
            !format!("{hooks:?}").contains("MfKQ9r8"),
            "the secret leaks into Debug"
        );
    }

    #[test]
    fn scheme_defaults() {
        let hooks = parse(
            r#"
[webhooks.gh]
scheme = "github"
secret = "s"
topic = "repos/{/repository/full_name}"
[webhooks.st]
scheme = "stripe"
secret = "whsec_abc"
topic = "payments/{/data/object/id}"
type_from = "/type"
[webhooks.plain]
scheme = "hmac"
secret = "s"
signature_header = "X-Signature"
signature_prefix = "sha256="
signature_encoding = "base64"
timestamp_header = "X-Timestamp"
topic = "t"
[webhooks.tok]
scheme = "bearer"
token = "t0k"
topic = "t"
type = "ping"
delivery_id_from = "/delivery"
"#,
        )
        .unwrap();
        assert_eq!(
            hooks.names().collect::<Vec<_>>(),
            ["gh", "plain", "st", "tok"]
        );
        let delivery = |n: &str| hooks.get(n).unwrap().delivery.clone();
        assert_eq!(
            delivery("gh"),
            DeliveryId::Header(HeaderName::from_static("x-github-delivery"))
        );
        assert_eq!(delivery("st"), DeliveryId::Pointer("/id".into()));
        assert_eq!(delivery("plain"), DeliveryId::None);
        assert_eq!(delivery("tok"), DeliveryId::Pointer("/delivery".into()));
        match &hooks.get("plain").unwrap().verifier {
            Verifier::Hmac(h) => {
                assert_eq!(h.encoding, Encoding::Base64);
                assert_eq!(h.timestamp.as_ref().unwrap().1, DEFAULT_TOLERANCE);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let hooks = parse(&format!(
            "[webhooks.gh]\nscheme = \"github\"\nsecret = \"@{}\"\ntopic = \"t\"\n",
            path.display()
        ))
        .unwrap();
        assert!(matches!(
            &hooks.get("gh").unwrap().verifier,
            Verifier::Github { secret } if *secret == Secret::new("from-a-file")
        ));
    }

    #[test]
    fn bad_tables_are_refused() {
        let base = "topic = \"jobs/{/id}\"\n";
        for bad in [
            "scheme = \"standard\"\nsecret = \"not base64!\"",
            "scheme = \"standard\"",
            "scheme = \"standard\"\nsecret = \"whsec_aGk=\"\nsignature_header = \"x\"",
            "scheme = \"github\"\nsecret = \"s\"\ntolerance = \"5m\"",
            "scheme = \"github\"\nsecret = \"s\"\ntoken = \"t\"",
            "scheme = \"bearer\"\nsecret = \"s\"",
            "scheme = \"bearer\"",
            "scheme = \"hmac\"\nsecret = \"s\"",
            "scheme = \"hmac\"\nsecret = \"s\"\nsignature_header = \"x\"\ntolerance = \"5m\"",
            "scheme = \"hmac\"\nsecret = \"s\"\nsignature_header = \"x\"\nsigned_content = \"{timestamp}{body}\"",
            "scheme = \"hmac\"\nsecret = \"s\"\nsignature_header = \"x\"\nsignature_encoding = \"base32\"",
            "scheme = \"stripe\"\nsecret = \"\"",
            "scheme = \"stripe\"\nsecret = \"s\"\ntolerance = \"0s\"",
            "scheme = \"stripe\"\nsecret = \"s\"\ntype = \"a\"\ntype_from = \"/b\"",
            "scheme = \"stripe\"\nsecret = \"s\"\ntype_map = { A = \"a\" }",
            "scheme = \"stripe\"\nsecret = \"s\"\ntype_from = \"status\"",
            "scheme = \"stripe\"\nsecret = \"s\"\ndata = { a = \"b\" }",
            "scheme = \"stripe\"\nsecret = \"s\"\ndelivery_id_header = \"x\"\ndelivery_id_from = \"/id\"",
            "scheme = \"stripe\"\nsecret = \"s\"\nunknown_key = 1",
            "scheme = \"ftp\"\nsecret = \"s\"",
        ] {
            let text = format!("[webhooks.w]\n{base}{bad}\n");
            assert!(parse(&text).is_err(), "accepted:\n{text}");
        }
        assert!(
            parse("[webhooks.w]\nscheme = \"github\"\nsecret = \"s\"\n").is_err(),
            "no topic"
        );
        assert!(parse("[webhooks.w]\nscheme = \"github\"\nsecret = \"s\"\ntopic = []\n").is_err());
        assert!(
            parse("[webhooks.\"a b\"]\nscheme = \"github\"\nsecret = \"s\"\ntopic = \"t\"\n")
                .is_err(),
            "a name that is not a path segment"
        );
    }

    #[test]
    fn deliveries_get_deterministic_ids() {
        let hooks = parse(
            "[webhooks.jobs]\nscheme = \"bearer\"\ntoken = \"t\"\ntopic = \"jobs/{/id}\"\n\
             delivery_id_header = \"X-Delivery\"\n",
        )
        .unwrap();
        let hook = hooks.get("jobs").unwrap();
        let h = headers(&[("authorization", "Bearer t"), ("x-delivery", "d-1")]);
        let event = hook.event(&h, br#"{"id": 5}"#, SystemTime::now()).unwrap();
        assert_eq!(event.id.unwrap().as_str(), "webhook:jobs:d-1");
        assert_eq!(event.topics[0].as_str(), "jobs/5");

        let no_delivery = headers(&[("authorization", "Bearer t")]);
        assert_eq!(
            hook.event(&no_delivery, br#"{"id": 5}"#, SystemTime::now()),
            Err(IngestError::MissingDeliveryId("x-delivery".into()))
        );
        assert!(matches!(
            hook.event(&h, b"{not json", SystemTime::now()),
            Err(IngestError::NotJson(_))
        ));
        let wrong = headers(&[("authorization", "Bearer x"), ("x-delivery", "d-1")]);
        assert_eq!(
            hook.event(&wrong, br#"{"id": 5}"#, SystemTime::now()),
            Err(IngestError::Unverified(VerifyError::BadToken)),
            "verification comes before anything else"
        );
    }
}
