//! Who is calling and what they may do: roles, API-key scopes, and the rule that joins them.

use std::fmt;

use super::error::{Error, Result};

/// A user's role in its organization. Platform users (the marketplace's own staff) are
/// `Operator` or `PlatformFinance`; customer organizations have the other three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
    Finance,
    Operator,
    PlatformFinance,
}

impl Role {
    /// From the stored role and whether the user's organization is the platform's.
    pub fn from_stored(role: &str, platform: bool) -> Option<Role> {
        Some(match (role, platform) {
            ("admin", false) => Role::Admin,
            ("member", false) => Role::Member,
            ("finance", false) => Role::Finance,
            ("operator", true) => Role::Operator,
            ("finance", true) => Role::PlatformFinance,
            _ => return None,
        })
    }

    /// The name clients see (`finance` for both kinds of finance users).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Finance | Role::PlatformFinance => "finance",
            Role::Operator => "operator",
        }
    }

    pub fn is_platform(self) -> bool {
        matches!(self, Role::Operator | Role::PlatformFinance)
    }

    pub fn allows(self, capability: Capability) -> bool {
        use Capability::*;
        match self {
            Role::Admin => matches!(
                capability,
                Read | ReadData | Write | Billing | ManageOrganization
            ),
            Role::Member => matches!(capability, Read | ReadData | Write),
            Role::Finance => matches!(capability, Read | Billing),
            Role::Operator => true,
            Role::PlatformFinance => matches!(capability, Read | Billing | PlatformBilling),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Billing,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Billing];

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "billing" => Some(Scope::Billing),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Billing => "billing",
        }
    }
}

/// Stored as a comma-separated list.
pub fn scopes_to_string(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn scopes_from_string(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(Scope::parse).collect()
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Read the organization's own objects and the catalog.
    Read,
    /// Read data bytes (asset content, download URLs): people who work with data, not
    /// finance, whose role is the organization's invoices (DESIGN section 3).
    ReadData,
    /// Change listings, subscriptions, data.
    Write,
    /// Read, export and pay the organization's invoices.
    Billing,
    /// Members, API keys, webhook endpoints: organization admins, never API keys.
    ManageOrganization,
    /// Run billing, finalize, void, credit, record payments: platform finance and operators.
    PlatformBilling,
    /// Operator-only actions (settings, ending subscriptions at once).
    Operate,
}

impl Capability {
    /// The key scope that carries this capability; `None` for what keys can never do.
    fn scope(self) -> Option<Scope> {
        match self {
            Capability::Read | Capability::ReadData => Some(Scope::Read),
            Capability::Write | Capability::Operate => Some(Scope::Write),
            Capability::Billing | Capability::PlatformBilling => Some(Scope::Billing),
            Capability::ManageOrganization => None,
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    ApiKey { key_id: String, scopes: Vec<Scope> },
}

/// An authenticated caller: a live user of an organization, through a token or one of its keys.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub user_email: String,
    pub user_name: String,
    pub organization_id: String,
    pub organization_name: String,
    pub role: Role,
    pub credential: Credential,
}

impl Caller {
    /// What a caller may do = its role's rights, and for a key also the key's scopes.
    pub fn can(&self, capability: Capability) -> bool {
        let role_allows = self.role.allows(capability);
        match &self.credential {
            Credential::AccessToken => role_allows,
            Credential::ApiKey { scopes, .. } => {
                role_allows
                    && capability
                        .scope()
                        .is_some_and(|needed| scopes.contains(&needed))
            }
        }
    }

    pub fn require(&self, capability: Capability) -> Result<()> {
        if self.can(capability) {
            Ok(())
        } else {
            Err(Error::Forbidden(match (&self.credential, capability) {
                (Credential::ApiKey { .. }, Capability::ManageOrganization) => {
                    "API keys cannot manage members, keys or webhook endpoints"
                }
                (Credential::ApiKey { .. }, _) => {
                    "this API key lacks the scope, or its creator the role, for this action"
                }
                _ => "your role does not allow this action",
            }))
        }
    }

    /// The identity idempotency keys and audit events are recorded under.
    pub fn principal(&self) -> String {
        match &self.credential {
            Credential::AccessToken => self.user_id.clone(),
            Credential::ApiKey { key_id, .. } => key_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, credential: Credential) -> Caller {
        Caller {
            user_id: "usr_1".into(),
            user_email: "a@example.com".into(),
            user_name: "A".into(),
            organization_id: "org_1".into(),
            organization_name: "O".into(),
            role,
            credential,
        }
    }

    #[test]
    fn key_rights_are_scopes_intersected_with_role() {
        let all = Credential::ApiKey {
            key_id: "key_1".into(),
            scopes: Scope::ALL.to_vec(),
        };
        let read = Credential::ApiKey {
            key_id: "key_2".into(),
            scopes: vec![Scope::Read],
        };
        assert!(caller(Role::Admin, all.clone()).can(Capability::Write));
        assert!(!caller(Role::Admin, all.clone()).can(Capability::ManageOrganization));
        assert!(!caller(Role::Admin, read.clone()).can(Capability::Write));
        assert!(!caller(Role::Finance, all.clone()).can(Capability::Write));
        assert!(caller(Role::Finance, all.clone()).can(Capability::Billing));
        assert!(caller(Role::Finance, all.clone()).can(Capability::Read));
        assert!(!caller(Role::Finance, all).can(Capability::ReadData));
        assert!(!caller(Role::PlatformFinance, Credential::AccessToken).can(Capability::ReadData));
        assert!(caller(Role::Member, read.clone()).can(Capability::ReadData));
        assert!(!caller(Role::Member, Credential::AccessToken).can(Capability::ManageOrganization));
        assert!(caller(Role::Admin, Credential::AccessToken).can(Capability::ManageOrganization));
        assert!(!caller(Role::Admin, Credential::AccessToken).can(Capability::PlatformBilling));
        assert!(
            caller(Role::PlatformFinance, Credential::AccessToken).can(Capability::PlatformBilling)
        );
        assert!(!caller(Role::PlatformFinance, Credential::AccessToken).can(Capability::Operate));
    }
}

/// Callers behind access tokens, kept a moment so that a client's burst of requests checks
/// its token and reads its user and organization once rather than on every request. An
/// entry is keyed by the exact token that was verified, lives [`CallerCache::TTL`] and never
/// past the token's own expiry; removing a member on this instance empties the cache at
/// once, and on other instances an entry outlives the removal by at most the TTL (far less
/// than an access token's own lifetime). API keys are not kept: revoking one takes effect at
/// once everywhere.
#[derive(Default)]
pub struct CallerCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedCaller>>,
    /// Bumped by [`CallerCache::clear`]: a caller read before a clear is not kept after it.
    generation: std::sync::atomic::AtomicU64,
}

struct CachedCaller {
    caller: Caller,
    /// The token's `exp` (Unix seconds).
    expires: i64,
    read_at: std::time::Instant,
}

/// The keys are bearer tokens: never printed.
impl std::fmt::Debug for CallerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or_default();
        f.debug_struct("CallerCache")
            .field("entries", &entries)
            .finish()
    }
}

impl CallerCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(1);
    /// Beyond this many tokens the cache drops what is stale, and starts over if that is not
    /// enough, so it never grows without bound.
    const MAX_ENTRIES: usize = 10_000;

    /// The caller behind `token`, if the token was verified and its caller read less than
    /// the TTL ago, and the token has not expired at `now`.
    pub fn get(&self, token: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Caller> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(token)?;
        (entry.read_at.elapsed() < Self::TTL && now.timestamp() < entry.expires)
            .then(|| entry.caller.clone())
    }

    /// Where the cache stands; pass it to [`CallerCache::put`] with a caller read after it.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps the caller behind a token just verified (which expires at `expires`), unless
    /// the cache was cleared since `generation` (the caller may have been removed meanwhile).
    pub fn put(&self, token: &str, expires: i64, caller: &Caller, generation: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if self.generation() != generation {
                return;
            }
            if entries.len() >= Self::MAX_ENTRIES {
                entries.retain(|_, e| e.read_at.elapsed() < Self::TTL);
                if entries.len() >= Self::MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(
                token.to_string(),
                CachedCaller {
                    caller: caller.clone(),
                    expires,
                    read_at: std::time::Instant::now(),
                },
            );
        }
    }

    /// Forgets every caller (after a change to who is a member).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            entries.clear();
        }
    }
}
