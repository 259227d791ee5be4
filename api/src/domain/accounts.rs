//! Accounts: organizations, their users and roles, sign-in sessions, API keys, platform users.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use schema::models::{ApiKey, Organization, RefreshToken, User};
use schema::schema::{api_keys, organizations, refresh_tokens, users};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::audit::{self, Entry};
use super::auth::{
    scopes_from_string, scopes_to_string, Caller, Capability, Credential, Role, Scope,
};
use super::clock::{db_time, utc, Clock};
use super::db::transaction;
use super::error::{Error, Problems, Result};
use super::ids::new_id;
use super::pagination::{Page, PageRequest};
use super::passwords;
use super::tokens::{new_secret, secret_hash, TokenKeys, API_KEY_PREFIX, REFRESH_TOKEN_PREFIX};
use super::validate::{text, Email, Password};
use crate::after_cursor;

pub const REFRESH_TTL_DAYS: i64 = 30;
const NAME_MAX: usize = 200;

/// What the account functions need besides a connection.
pub struct Context<'a> {
    pub clock: &'a dyn Clock,
    pub tokens: &'a TokenKeys,
}

// ---------- views (the API's shapes) ----------

#[derive(Debug, Clone, Serialize)]
pub struct UserRef {
    pub id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrganizationRef {
    pub id: String,
    pub name: String,
}

/// The answer to signup, token and refresh. It carries secrets: never stored for replay.
#[derive(Debug, Serialize)]
pub struct Session {
    pub user: UserRef,
    pub organization: OrganizationRef,
    pub role: String,
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

#[derive(Debug, Serialize)]
pub struct Me {
    pub user: UserRef,
    pub organization: OrganizationRef,
    pub role: String,
    pub credential: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<&'static str>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<&'static str>,
    /// The key's last four characters, to tell keys apart.
    pub hint: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<&'static str>,
    pub key: String,
    pub created_at: DateTime<Utc>,
}

// ---------- requests ----------

#[derive(Debug, Deserialize)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub name: String,
    pub organization_name: String,
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize)]
pub struct NewMemberRequest {
    pub email: String,
    pub name: String,
    pub password: String,
    pub role: String,
}

#[derive(Debug, Deserialize)]
pub struct NewApiKeyRequest {
    pub name: String,
    pub scopes: Option<Vec<String>>,
}

// ---------- sign-up and sessions ----------

struct NewUser {
    email: Email,
    name: String,
    password: Password,
}

fn parse_new_user(
    problems: &mut Problems,
    email: &str,
    name: &str,
    password: &str,
) -> Option<NewUser> {
    let email = problems.check("email", Email::parse(email));
    let name = problems.check("name", text(name, NAME_MAX));
    let password = problems.check("password", Password::parse(password));
    Some(NewUser {
        email: email?,
        name: name?,
        password: password?,
    })
}

fn email_taken() -> Error {
    Error::conflict(
        "email_taken",
        "an account with this e-mail address already exists",
    )
}

fn user_row(
    organization_id: &str,
    user: &NewUser,
    password_hash: String,
    role: &str,
    now: DateTime<Utc>,
) -> User {
    User {
        id: new_id("usr"),
        organization_id: organization_id.to_string(),
        email: user.email.as_str().to_string(),
        name: user.name.clone(),
        password_hash,
        role: role.to_string(),
        created_at: db_time(now),
        removed_at: None,
    }
}

/// Inserts a user; a live user with the same e-mail (a concurrent insert too) is
/// `email_taken`, not a 500. A removed member's address may be used again.
fn insert_user(conn: &mut DbConnection, row: &User) -> Result<()> {
    let taken = users::table
        .filter(users::email.eq(&row.email))
        .filter(users::removed_at.is_null())
        .select(users::id)
        .first::<String>(conn)
        .optional()?;
    if taken.is_some() {
        return Err(email_taken());
    }
    diesel::insert_into(users::table)
        .values(row)
        .execute(conn)
        .map_err(|e| {
            if schema::is_unique_violation(&e) {
                email_taken()
            } else {
                e.into()
            }
        })?;
    Ok(())
}

/// Creates an organization and its first admin, signed in.
pub fn signup(
    conn: &mut DbConnection,
    ctx: &Context<'_>,
    request: SignupRequest,
) -> Result<Session> {
    let mut problems = Problems::new();
    let user = parse_new_user(
        &mut problems,
        &request.email,
        &request.name,
        &request.password,
    );
    let org_name = problems.check(
        "organization_name",
        text(&request.organization_name, NAME_MAX),
    );
    problems.finish()?;
    let (Some(user), Some(org_name)) = (user, org_name) else {
        return Err(Error::internal("validation passed without values"));
    };
    let password_hash = passwords::hash(user.password.expose())?;
    transaction(conn, |conn| {
        let now = ctx.clock.now();
        let org = Organization {
            id: new_id("org"),
            name: org_name.clone(),
            kind: "customer".into(),
            tax_rate_bps: None,
            fee_bps: None,
            created_at: db_time(now),
        };
        diesel::insert_into(organizations::table)
            .values(&org)
            .execute(conn)?;
        let row = user_row(&org.id, &user, password_hash.clone(), "admin", now);
        insert_user(conn, &row)?;
        audit::record(
            conn,
            ctx.clock,
            Entry::new(&org.id, &row.id, "organization.created", &org.id)
                .detail(serde_json::json!({ "name": org.name })),
        )?;
        start_session(conn, ctx, &row, &org, Role::Admin, None)
    })
}

/// Signs in with e-mail and password: an access token and a refresh token.
pub fn sign_in(
    conn: &mut DbConnection,
    ctx: &Context<'_>,
    request: TokenRequest,
) -> Result<Session> {
    let (user, org, role) = check_password(conn, &request)?;
    transaction(conn, |conn| {
        start_session(conn, ctx, &user, &org, role, None)
    })
}

/// The live user an e-mail and password belong to, for every way of signing in (tokens,
/// the console's sessions). Unknown e-mail, wrong password and removed users all get the
/// same answer after the same work.
pub fn check_password(
    conn: &mut DbConnection,
    request: &TokenRequest,
) -> Result<(User, Organization, Role)> {
    const WRONG: Error = Error::Unauthorized("the e-mail address or password is wrong");
    // As accounts are made now, and as they were before addresses were normalized.
    let legacy = request.email.trim().to_lowercase();
    let spellings = match Email::parse(&request.email) {
        Ok(email) => vec![email.as_str().to_string(), legacy],
        Err(_) => vec![legacy],
    };
    // Two live users only if an account made before normalization shares the mailbox with
    // one made after ([`normalize_stored_emails`] leaves such a pair as it is): the
    // password tells which is meant.
    let found: Vec<(User, Organization)> = users::table
        .inner_join(organizations::table)
        .filter(users::email.eq_any(&spellings))
        .filter(users::removed_at.is_null())
        .order(users::created_at.asc())
        .select((User::as_select(), Organization::as_select()))
        .load(conn)?;
    if found.is_empty() {
        passwords::verify_nothing(&request.password);
        return Err(WRONG);
    }
    let Some((user, org)) = found
        .into_iter()
        .find(|(user, _)| passwords::verify(&user.password_hash, &request.password))
    else {
        return Err(WRONG);
    };
    let role = Role::from_stored(&user.role, org.kind == "platform").ok_or(WRONG)?;
    Ok((user, org, role))
}

/// Issues an access token and a refresh token (a new family unless `family_id` continues one).
fn start_session(
    conn: &mut DbConnection,
    ctx: &Context<'_>,
    user: &User,
    org: &Organization,
    role: Role,
    family_id: Option<&str>,
) -> Result<Session> {
    let now = ctx.clock.now();
    let refresh_token = new_secret(REFRESH_TOKEN_PREFIX);
    diesel::insert_into(refresh_tokens::table)
        .values(RefreshToken {
            id: new_id("rtk"),
            organization_id: org.id.clone(),
            user_id: user.id.clone(),
            family_id: family_id
                .map(str::to_string)
                .unwrap_or_else(|| new_id("fam")),
            token_hash: secret_hash(&refresh_token),
            created_at: db_time(now),
            expires_at: db_time(now + Duration::days(REFRESH_TTL_DAYS)),
            spent_at: None,
            revoked_at: None,
        })
        .execute(conn)?;
    Ok(Session {
        user: UserRef {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
        },
        organization: OrganizationRef {
            id: org.id.clone(),
            name: org.name.clone(),
        },
        role: role.as_str().into(),
        access_token: ctx.tokens.issue(&user.id, &org.id, now)?,
        refresh_token,
        token_type: "Bearer",
        expires_in: ctx.tokens.access_ttl_secs,
    })
}

enum RefreshOutcome {
    Renewed(Box<Session>),
    /// A spent token came back: its whole family has been revoked (and that must commit).
    Reused,
    Invalid,
}

/// Trades a refresh token for new tokens. The old one is spent; presenting a spent one again
/// means it leaked, so every token of its family is revoked.
pub fn refresh(
    conn: &mut DbConnection,
    ctx: &Context<'_>,
    request: RefreshRequest,
) -> Result<Session> {
    let hash = secret_hash(request.refresh_token.trim());
    let outcome = transaction(conn, |conn| {
        let now = db_time(ctx.clock.now());
        let found: Option<(RefreshToken, User, Organization)> = refresh_tokens::table
            .inner_join(users::table.inner_join(organizations::table))
            .filter(refresh_tokens::token_hash.eq(&hash))
            .select((
                RefreshToken::as_select(),
                User::as_select(),
                Organization::as_select(),
            ))
            .first(conn)
            .optional()?;
        let Some((token, user, org)) = found else {
            return Ok(RefreshOutcome::Invalid);
        };
        if token.revoked_at.is_some() || token.expires_at <= now || user.removed_at.is_some() {
            return Ok(RefreshOutcome::Invalid);
        }
        let spent_now = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::id.eq(&token.id))
                .filter(refresh_tokens::spent_at.is_null()),
        )
        .set(refresh_tokens::spent_at.eq(now))
        .execute(conn)?;
        if spent_now == 0 {
            diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::family_id.eq(&token.family_id))
                    .filter(refresh_tokens::revoked_at.is_null()),
            )
            .set(refresh_tokens::revoked_at.eq(now))
            .execute(conn)?;
            audit::record(
                conn,
                ctx.clock,
                Entry::new(
                    &org.id,
                    &user.id,
                    "refresh_token.reuse_detected",
                    &token.family_id,
                ),
            )?;
            return Ok(RefreshOutcome::Reused);
        }
        let role = Role::from_stored(&user.role, org.kind == "platform")
            .ok_or(Error::internal("unknown stored role"))?;
        start_session(conn, ctx, &user, &org, role, Some(&token.family_id))
            .map(|s| RefreshOutcome::Renewed(Box::new(s)))
    })?;
    match outcome {
        RefreshOutcome::Renewed(session) => Ok(*session),
        RefreshOutcome::Reused => Err(Error::Unauthorized(
            "this refresh token was already used; its session has been revoked",
        )),
        RefreshOutcome::Invalid => Err(Error::Unauthorized(
            "the refresh token is invalid, expired or revoked",
        )),
    }
}

/// Rewrites the e-mail addresses of live users stored before addresses were normalized
/// (NFC, IDNA domain: [`Email::parse`]) in their normalized spelling, so that one mailbox
/// cannot get a second account. An address whose normalized spelling another live user
/// has already is left as it is (and logged): merging accounts is for people to decide.
/// Runs at every start, after the migrations; returns how many addresses it rewrote. Only
/// addresses with a character beyond ASCII can change (they were lower-cased already), so
/// only those are read.
pub fn normalize_stored_emails(conn: &mut DbConnection) -> Result<usize> {
    let beyond_ascii = diesel::dsl::sql::<diesel::sql_types::Bool>(
        "length(users.email) <> octet_length(users.email)",
    );
    let live: Vec<(String, String)> = users::table
        .filter(users::removed_at.is_null())
        .filter(beyond_ascii)
        .select((users::id, users::email))
        .load(conn)?;
    let mut rewritten = 0;
    for (id, stored) in live {
        let Ok(normalized) = Email::parse(&stored) else {
            continue;
        };
        if normalized.as_str() == stored {
            continue;
        }
        let done = transaction(conn, |conn| {
            let taken = users::table
                .filter(users::email.eq(normalized.as_str()))
                .filter(users::removed_at.is_null())
                .select(users::id)
                .first::<String>(conn)
                .optional()?;
            if taken.is_some() {
                return Ok(false);
            }
            // Another instance, or a sign-up, may take the spelling meanwhile.
            match diesel::update(users::table.find(&id).filter(users::email.eq(&stored)))
                .set(users::email.eq(normalized.as_str()))
                .execute(conn)
            {
                Ok(n) => Ok(n > 0),
                Err(e) if schema::is_unique_violation(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })?;
        if done {
            rewritten += 1;
        } else {
            tracing::warn!(user = %id, "e-mail address left as stored: another live user has its normalized spelling");
        }
    }
    Ok(rewritten)
}

/// Whether a principal (a user id, or an API key's id) is still a live member of the
/// organization, or a live key of one: what a signed URL issued to it needs at every use.
pub fn principal_is_live(
    conn: &mut DbConnection,
    organization_id: &str,
    principal: &str,
) -> Result<bool> {
    let found: Option<String> = if principal.starts_with("key_") {
        api_keys::table
            .inner_join(users::table)
            .filter(api_keys::id.eq(principal))
            .filter(api_keys::organization_id.eq(organization_id))
            .filter(api_keys::revoked_at.is_null())
            .filter(users::removed_at.is_null())
            .select(api_keys::id)
            .first(conn)
            .optional()?
    } else {
        users::table
            .filter(users::id.eq(principal))
            .filter(users::organization_id.eq(organization_id))
            .filter(users::removed_at.is_null())
            .select(users::id)
            .first(conn)
            .optional()?
    };
    Ok(found.is_some())
}

// ---------- who is calling ----------

fn caller_from(user: User, org: Organization, credential: Credential) -> Option<Caller> {
    let role = Role::from_stored(&user.role, org.kind == "platform")?;
    Some(Caller {
        user_id: user.id,
        user_email: user.email,
        user_name: user.name,
        organization_id: org.id,
        organization_name: org.name,
        role,
        credential,
    })
}

/// The caller behind a verified access token, if the user is still a live member.
pub fn caller_for_token(
    conn: &mut DbConnection,
    user_id: &str,
    organization_id: &str,
) -> Result<Caller> {
    let found: Option<(User, Organization)> = users::table
        .inner_join(organizations::table)
        .filter(users::id.eq(user_id))
        .filter(users::organization_id.eq(organization_id))
        .filter(users::removed_at.is_null())
        .select((User::as_select(), Organization::as_select()))
        // By primary key: `get_result`, not `first`, whose bound LIMIT makes SQLite
        // re-prepare the statement on every call (this runs on every request).
        .get_result(conn)
        .optional()?;
    found
        .and_then(|(user, org)| caller_from(user, org, Credential::AccessToken))
        .ok_or(Error::Unauthorized(
            "the access token's user no longer exists",
        ))
}

/// The caller behind an API key, if the key is live and its creator still a member.
pub fn caller_for_api_key(conn: &mut DbConnection, key: &str) -> Result<Caller> {
    let found: Option<(ApiKey, User, Organization)> = api_keys::table
        .inner_join(users::table.inner_join(organizations::table))
        .filter(api_keys::key_hash.eq(secret_hash(key)))
        .filter(api_keys::revoked_at.is_null())
        .filter(users::removed_at.is_null())
        .select((
            ApiKey::as_select(),
            User::as_select(),
            Organization::as_select(),
        ))
        .get_result(conn)
        .optional()?;
    found
        .and_then(|(key, user, org)| {
            let credential = Credential::ApiKey {
                key_id: key.id,
                scopes: scopes_from_string(&key.scopes),
            };
            caller_from(user, org, credential)
        })
        .ok_or(Error::Unauthorized("the API key is invalid or revoked"))
}

pub fn me(caller: &Caller) -> Me {
    let (credential, scopes) = match &caller.credential {
        Credential::AccessToken => ("access_token", None),
        Credential::ApiKey { scopes, .. } => {
            ("api_key", Some(scopes.iter().map(|s| s.as_str()).collect()))
        }
    };
    Me {
        user: UserRef {
            id: caller.user_id.clone(),
            email: caller.user_email.clone(),
            name: caller.user_name.clone(),
        },
        organization: OrganizationRef {
            id: caller.organization_id.clone(),
            name: caller.organization_name.clone(),
        },
        role: caller.role.as_str().into(),
        credential,
        scopes,
    }
}

// ---------- members ----------

/// Starts a change to the caller's organization's members, keys or webhook endpoints, in
/// the transaction that makes it: locks the organization, so such changes go one at a
/// time, and checks that the caller is still one of its live admins. The caller was read
/// before the transaction (perhaps from the caller cache); without this, two admins
/// removing each other at once would both succeed and leave nobody to manage it.
pub fn lock_for_management(conn: &mut DbConnection, caller: &Caller) -> Result<()> {
    schema::locks::organization(conn, &caller.organization_id)?;
    let role: Option<String> = users::table
        .filter(users::id.eq(&caller.user_id))
        .filter(users::organization_id.eq(&caller.organization_id))
        .filter(users::removed_at.is_null())
        .select(users::role)
        .get_result(conn)
        .optional()?;
    let Some(role) = role else {
        return Err(Error::Unauthorized(
            "the access token's user no longer exists",
        ));
    };
    match Role::from_stored(&role, caller.role.is_platform()) {
        Some(now) if now.allows(Capability::ManageOrganization) => Ok(()),
        _ => Err(Error::Forbidden("your role does not allow this action")),
    }
}

fn member_view(user: User, platform: bool) -> Member {
    let role = Role::from_stored(&user.role, platform)
        .map(Role::as_str)
        .unwrap_or("member");
    Member {
        id: user.id,
        email: user.email,
        name: user.name,
        role: role.into(),
        created_at: utc(user.created_at),
    }
}

/// The roles an organization's admins may give: customers' three, or the platform's two.
fn parse_member_role(raw: &str, platform: bool) -> Result<&'static str, String> {
    match (raw, platform) {
        ("admin", false) => Ok("admin"),
        ("member", false) => Ok("member"),
        ("finance", _) => Ok("finance"),
        ("operator", true) => Ok("operator"),
        (_, false) => Err("must be one of admin, member, finance".into()),
        (_, true) => Err("must be one of operator, finance".into()),
    }
}

pub fn add_member(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    request: NewMemberRequest,
) -> Result<Member> {
    caller.require(Capability::ManageOrganization)?;
    let platform = caller.role.is_platform();
    let mut problems = Problems::new();
    let user = parse_new_user(
        &mut problems,
        &request.email,
        &request.name,
        &request.password,
    );
    let role = problems.check("role", parse_member_role(&request.role, platform));
    problems.finish()?;
    let (Some(user), Some(role)) = (user, role) else {
        return Err(Error::internal("validation passed without values"));
    };
    let password_hash = passwords::hash(user.password.expose())?;
    transaction(conn, |conn| {
        lock_for_management(conn, caller)?;
        let row = user_row(
            &caller.organization_id,
            &user,
            password_hash.clone(),
            role,
            clock.now(),
        );
        insert_user(conn, &row)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "member.added",
                &row.id,
            )
            .detail(serde_json::json!({ "role": role })),
        )?;
        Ok(member_view(row, platform))
    })
}

pub fn list_members(
    conn: &mut DbConnection,
    caller: &Caller,
    page: &PageRequest,
) -> Result<Page<Member>> {
    caller.require(Capability::Read)?;
    let rows: Vec<User> = after_cursor!(
        users::table
            .filter(users::organization_id.eq(&caller.organization_id))
            .filter(users::removed_at.is_null()),
        page,
        users::created_at,
        users::id
    )
    .select(User::as_select())
    .load(conn)?;
    let platform = caller.role.is_platform();
    Ok(Page::from_rows(
        page,
        rows,
        |u| (u.created_at, u.id.clone()),
        |u| member_view(u, platform),
    ))
}

/// Removes a member: they can no longer sign in, and their keys and refresh tokens die.
pub fn remove_member(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    user_id: &str,
) -> Result<()> {
    caller.require(Capability::ManageOrganization)?;
    if user_id == caller.user_id {
        return Err(Error::conflict(
            "cannot_remove_self",
            "you cannot remove yourself; ask another admin",
        ));
    }
    transaction(conn, |conn| {
        lock_for_management(conn, caller)?;
        let now = db_time(clock.now());
        let removed = diesel::update(
            users::table
                .filter(users::id.eq(user_id))
                .filter(users::organization_id.eq(&caller.organization_id))
                .filter(users::removed_at.is_null()),
        )
        .set(users::removed_at.eq(now))
        .execute(conn)?;
        if removed == 0 {
            return Err(Error::NotFound("member"));
        }
        diesel::update(
            api_keys::table
                .filter(api_keys::user_id.eq(user_id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(now))
        .execute(conn)?;
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::user_id.eq(user_id))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::revoked_at.eq(now))
        .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "member.removed",
                user_id,
            ),
        )
    })
}

// ---------- API keys ----------

fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

fn parse_scopes(problems: &mut Problems, raw: Option<&[String]>) -> Vec<Scope> {
    let Some(raw) = raw else {
        return Scope::ALL.to_vec();
    };
    if raw.is_empty() {
        problems.push("scopes", "must name at least one of read, write, billing");
    }
    let mut scopes = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match Scope::parse(s) {
            Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Some(_) => {}
            None => problems.push(
                format!("scopes[{i}]"),
                "must be one of read, write, billing",
            ),
        }
    }
    scopes.sort();
    scopes
}

pub fn create_api_key(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    request: NewApiKeyRequest,
) -> Result<CreatedApiKey> {
    caller.require(Capability::ManageOrganization)?;
    let mut problems = Problems::new();
    let name = problems.check("name", text(&request.name, NAME_MAX));
    let scopes = parse_scopes(&mut problems, request.scopes.as_deref());
    problems.finish()?;
    let name = name.unwrap_or_default();
    transaction(conn, |conn| {
        lock_for_management(conn, caller)?;
        let now = clock.now();
        let key = new_secret(API_KEY_PREFIX);
        let row = ApiKey {
            id: new_id("key"),
            organization_id: caller.organization_id.clone(),
            user_id: caller.user_id.clone(),
            name: name.clone(),
            key_hash: secret_hash(&key),
            key_hint: key[key.len() - 4..].to_string(),
            scopes: scopes_to_string(&scopes),
            created_at: db_time(now),
            revoked_at: None,
        };
        diesel::insert_into(api_keys::table)
            .values(&row)
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "api_key.created",
                &row.id,
            )
            .detail(serde_json::json!({ "scopes": row.scopes })),
        )?;
        Ok(CreatedApiKey {
            id: row.id,
            name: row.name,
            scopes: scope_names(&scopes),
            key,
            created_at: now,
        })
    })
}

pub fn list_api_keys(
    conn: &mut DbConnection,
    caller: &Caller,
    page: &PageRequest,
) -> Result<Page<ApiKeyView>> {
    caller.require(Capability::ManageOrganization)?;
    let rows: Vec<ApiKey> = after_cursor!(
        api_keys::table.filter(api_keys::organization_id.eq(&caller.organization_id)),
        page,
        api_keys::created_at,
        api_keys::id
    )
    .select(ApiKey::as_select())
    .load(conn)?;
    Ok(Page::from_rows(
        page,
        rows,
        |k| (k.created_at, k.id.clone()),
        |k| ApiKeyView {
            scopes: scope_names(&scopes_from_string(&k.scopes)),
            id: k.id,
            name: k.name,
            hint: k.key_hint,
            created_by: k.user_id,
            created_at: utc(k.created_at),
            revoked_at: k.revoked_at.map(utc),
        },
    ))
}

/// Revokes a key of the caller's organization; revoking a revoked key is a no-op.
pub fn revoke_api_key(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    key_id: &str,
) -> Result<()> {
    caller.require(Capability::ManageOrganization)?;
    transaction(conn, |conn| {
        lock_for_management(conn, caller)?;
        let exists = api_keys::table
            .filter(api_keys::id.eq(key_id))
            .filter(api_keys::organization_id.eq(&caller.organization_id))
            .select(api_keys::id)
            .first::<String>(conn)
            .optional()?;
        if exists.is_none() {
            return Err(Error::NotFound("API key"));
        }
        let revoked = diesel::update(
            api_keys::table
                .filter(api_keys::id.eq(key_id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(db_time(clock.now())))
        .execute(conn)?;
        if revoked == 1 {
            audit::record(
                conn,
                clock,
                Entry::new(
                    &caller.organization_id,
                    &caller.principal(),
                    "api_key.revoked",
                    key_id,
                ),
            )?;
        }
        Ok(())
    })
}

// ---------- platform users ----------

pub const PLATFORM_ORGANIZATION_NAME: &str = "Marketplace";

/// Creates a platform user (`operator` or `finance`), and the platform organization on first use.
pub fn create_platform_user(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    email: &str,
    name: &str,
    password: &str,
    role: &str,
) -> Result<Member> {
    let mut problems = Problems::new();
    let user = parse_new_user(&mut problems, email, name, password);
    let role = problems.check("role", parse_member_role(role, true));
    problems.finish()?;
    let (Some(user), Some(role)) = (user, role) else {
        return Err(Error::internal("validation passed without values"));
    };
    let password_hash = passwords::hash(user.password.expose())?;
    transaction(conn, |conn| {
        let now = clock.now();
        let existing: Option<String> = organizations::table
            .filter(organizations::kind.eq("platform"))
            .select(organizations::id)
            .first(conn)
            .optional()?;
        let org_id = match existing {
            Some(id) => id,
            None => {
                let org = Organization {
                    id: new_id("org"),
                    name: PLATFORM_ORGANIZATION_NAME.into(),
                    kind: "platform".into(),
                    tax_rate_bps: None,
                    fee_bps: None,
                    created_at: db_time(now),
                };
                diesel::insert_into(organizations::table)
                    .values(&org)
                    .execute(conn)?;
                org.id
            }
        };
        let row = user_row(&org_id, &user, password_hash.clone(), role, now);
        insert_user(conn, &row)?;
        audit::record(
            conn,
            clock,
            Entry::new(&org_id, "cli", "member.added", &row.id)
                .detail(serde_json::json!({ "role": role })),
        )?;
        Ok(member_view(row, true))
    })
}
