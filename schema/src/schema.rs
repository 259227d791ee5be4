//! Diesel table definitions, shared by both backends (hand-kept: one file for SQLite and PostgreSQL).

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        kind -> Text,
        tax_rate_bps -> Nullable<Integer>,
        fee_bps -> Nullable<Integer>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        organization_id -> Text,
        email -> Text,
        name -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamp,
        removed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        organization_id -> Text,
        user_id -> Text,
        name -> Text,
        key_hash -> Text,
        key_hint -> Text,
        scopes -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        organization_id -> Text,
        user_id -> Text,
        family_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        spent_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    server_secrets (id) {
        id -> Text,
        purpose -> Text,
        secret -> Text,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    idempotency_keys (caller, method, path, idempotency_key) {
        caller -> Text,
        method -> Text,
        path -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        state -> Text,
        response_status -> Nullable<Integer>,
        response_content_type -> Nullable<Text>,
        response_body -> Nullable<Binary>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        organization_id -> Text,
        actor -> Text,
        action -> Text,
        subject -> Text,
        grant_id -> Nullable<Text>,
        detail -> Text,
        client_address -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(refresh_tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    api_keys,
    refresh_tokens,
    server_secrets,
    idempotency_keys,
    audit_events,
);
