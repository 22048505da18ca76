//! `CacheKey`: the name of a generation. blake3 over a canonical JSON encoding of everything that
//! decides the images: the key version, the provider's identity, the endpoint, the headers and the
//! compiled body with every local or upstream image replaced by the blake3 of its bytes. Output paths
//! are not in it, so renaming an output costs nothing. Nor is `n` (since version 2): a key names a
//! *pool* of images, of which a task with `n = 3` uses the first three; raising `n` asks only for
//! the images the pool lacks, lowering it restores a subset.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::compile::Compiled;

/// Bump when the encoding or the meaning of any keyed field changes: every key changes with it.
/// 2: `parameters.n` left out (the key names a pool of images). Results of version 1 are migrated
/// on first sight (see [`CacheKey::legacy`]).
pub const KEY_VERSION: u32 = 2;

/// Who produces the images. Emulated images never satisfy a real build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// The real DashScope service (any region or workspace domain on `aliyuncs.com`).
    DashScope,
    /// wanx's own emulator, in process (`--emulate`) or standalone on a loopback address.
    Emulator,
    /// Another DashScope-compatible service, named by its host.
    Compatible(String),
}

impl Provider {
    /// Decides the identity from the base URL the client will talk to.
    pub fn from_base_url(base_url: &str) -> Provider {
        // A base URL without a scheme (`127.0.0.1:8000/api/v1`) is read as `http://`.
        let parsed = url::Url::parse(base_url)
            .ok()
            .filter(url::Url::has_host)
            .or_else(|| url::Url::parse(&format!("http://{base_url}")).ok());
        let host = match parsed.as_ref().and_then(url::Url::host) {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => return Provider::Emulator,
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => return Provider::Emulator,
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Domain(domain)) => domain.to_ascii_lowercase(),
            None => base_url.to_ascii_lowercase(),
        };
        if host == "localhost" {
            Provider::Emulator
        } else if host == "aliyuncs.com" || host.ends_with(".aliyuncs.com") {
            Provider::DashScope
        } else {
            Provider::Compatible(host)
        }
    }

    pub fn identity(&self) -> String {
        match self {
            Provider::DashScope => "dashscope".to_owned(),
            Provider::Emulator => "wanx-emulator".to_owned(),
            Provider::Compatible(host) => format!("compatible:{host}"),
        }
    }

    pub fn is_emulated(&self) -> bool {
        *self == Provider::Emulator
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

#[derive(Serialize)]
struct Material<'a> {
    version: u32,
    provider: &'a str,
    endpoint: &'a str,
    headers: &'a [(&'static str, String)],
    body: &'a Value,
}

impl CacheKey {
    /// Keys `compiled` for `provider`. `media` gives the blake3 (hex) of each image in
    /// `compiled.media`, in the same order.
    pub fn new(provider: &Provider, compiled: &Compiled, media: &[String]) -> CacheKey {
        Self::versioned(KEY_VERSION, provider, compiled, media)
    }

    /// The key version 1 gave the same request (`n` included): a lock or store written by an
    /// earlier wanx names its results by it.
    pub fn legacy(provider: &Provider, compiled: &Compiled, media: &[String]) -> CacheKey {
        Self::versioned(1, provider, compiled, media)
    }

    fn versioned(
        version: u32,
        provider: &Provider,
        compiled: &Compiled,
        media: &[String],
    ) -> CacheKey {
        assert_eq!(
            media.len(),
            compiled.media.len(),
            "one digest per media slot"
        );
        let pool = version >= 2 && compiled.body["parameters"].get("n").is_some();
        let body = if media.is_empty() && !pool {
            std::borrow::Cow::Borrowed(&compiled.body)
        } else {
            let mut body = compiled.body.clone();
            if pool && let Some(parameters) = body["parameters"].as_object_mut() {
                parameters.remove("n");
            }
            for (slot, digest) in compiled.media.iter().zip(media) {
                if let Some(v) = body.pointer_mut(&slot.pointer) {
                    *v = Value::String(format!("blake3:{digest}"));
                }
            }
            std::borrow::Cow::Owned(body)
        };
        let identity = provider.identity();
        let material = Material {
            version,
            provider: &identity,
            endpoint: &compiled.endpoint,
            headers: &compiled.headers,
            body: &body,
        };
        let mut hasher = blake3::Hasher::new();
        // serde_json's `Map` is a BTreeMap (no `preserve_order`), so object keys are sorted: canonical.
        serde_json::to_writer(&mut hasher, &material)
            .expect("writing JSON into a hasher cannot fail");
        CacheKey(*hasher.finalize().as_bytes())
    }

    #[cfg(test)]
    pub fn from_hex(hex: &str) -> Option<CacheKey> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| CacheKey(*h.as_bytes()))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex digits on the stack, for comparisons that need no `String`.
    pub fn to_hex(self) -> impl std::ops::Deref<Target = str> + use<> {
        blake3::Hash::from(self.0).to_hex()
    }

    pub fn hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, for `{key}` in file names and for display.
    pub fn short(&self) -> String {
        self.hex()[..12].to_owned()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, tests::task};
    use crate::registry::Registry;

    /// If this digest changes, every user's cache and lock is invalidated: bump KEY_VERSION on purpose
    /// and update the pin, never by accident.
    #[test]
    fn pinned_digest() {
        let c = compile(
            &task("pin", "wan2.2-t2i-flash", "a lighthouse at dusk"),
            &Registry::builtin(),
        );
        let key = CacheKey::new(&Provider::DashScope, &c, &[]);
        assert_eq!(
            key.hex(),
            "2dd6d0053be770e9edafde6bc288f44f9c0c3b7af1e138c24267721954c259a3"
        );
        // Version 1's pin, unchanged: `legacy` names what an earlier wanx recorded.
        assert_eq!(
            CacheKey::legacy(&Provider::DashScope, &c, &[]).hex(),
            "aee290f9f1f1af03cb66fc6e2c97e60255ae47386ecc8ca1ba2588c87ed6db98"
        );
    }

    #[test]
    fn n_is_not_in_the_key_but_was_in_version_1() {
        let r = Registry::builtin();
        let mut a = task("a", "wan2.2-t2i-flash", "same");
        a.n = 1;
        let mut b = a.clone();
        b.n = 4;
        let (a, b) = (compile(&a, &r), compile(&b, &r));
        assert_eq!(
            CacheKey::new(&Provider::DashScope, &a, &[]),
            CacheKey::new(&Provider::DashScope, &b, &[])
        );
        assert_ne!(
            CacheKey::legacy(&Provider::DashScope, &a, &[]),
            CacheKey::legacy(&Provider::DashScope, &b, &[])
        );
    }

    #[test]
    fn output_paths_and_ids_are_not_in_the_key() {
        let r = Registry::builtin();
        let a = task("a", "wan2.2-t2i-flash", "same");
        let mut b = task("b", "wan2.2-t2i-flash", "same");
        b.output.filename = "other_{id}.png".into();
        b.output.dir = "elsewhere".into();
        assert_eq!(
            CacheKey::new(&Provider::DashScope, &compile(&a, &r), &[]),
            CacheKey::new(&Provider::DashScope, &compile(&b, &r), &[])
        );
    }

    #[test]
    fn the_prompt_and_the_provider_are() {
        let r = Registry::builtin();
        let a = compile(&task("a", "wan2.2-t2i-flash", "one"), &r);
        let b = compile(&task("a", "wan2.2-t2i-flash", "two"), &r);
        assert_ne!(
            CacheKey::new(&Provider::DashScope, &a, &[]),
            CacheKey::new(&Provider::DashScope, &b, &[])
        );
        assert_ne!(
            CacheKey::new(&Provider::DashScope, &a, &[]),
            CacheKey::new(&Provider::Emulator, &a, &[])
        );
    }

    #[test]
    fn provider_identity_follows_the_host() {
        assert_eq!(
            Provider::from_base_url("https://dashscope.aliyuncs.com/api/v1"),
            Provider::DashScope
        );
        assert_eq!(
            Provider::from_base_url("https://dashscope-intl.aliyuncs.com/api/v1"),
            Provider::DashScope
        );
        assert_eq!(
            Provider::from_base_url("http://127.0.0.1:4567/api/v1"),
            Provider::Emulator
        );
        assert_eq!(
            Provider::from_base_url("http://[::1]:80/api/v1"),
            Provider::Emulator
        );
        assert_eq!(
            Provider::from_base_url("https://proxy.example.com/api/v1"),
            Provider::Compatible("proxy.example.com".into())
        );
        assert_eq!(
            Provider::from_base_url("http://user@LOCALHOST:8000/api/v1"),
            Provider::Emulator
        );
        assert_eq!(
            Provider::from_base_url("127.0.0.2:8000/api/v1"),
            Provider::Emulator
        );
    }

    /// A host that merely starts with `127.` is a domain name (here one that resolves anywhere):
    /// the hand-written check took it for the local emulator.
    #[test]
    fn a_domain_starting_with_127_is_not_the_emulator() {
        assert_eq!(
            Provider::from_base_url("http://127.0.0.1.nip.io:4567/api/v1"),
            Provider::Compatible("127.0.0.1.nip.io".into())
        );
    }
}
