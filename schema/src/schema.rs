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

diesel::table! {
    listings (id) {
        id -> Text,
        organization_id -> Text,
        title -> Text,
        summary -> Text,
        description -> Text,
        categories -> Text,
        tags -> Text,
        visibility -> Text,
        state -> Text,
        search_document -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        published_at -> Nullable<Timestamp>,
        archived_at -> Nullable<Timestamp>,
        search_labels -> Text,
    }
}

diesel::table! {
    listing_labels (listing_id, kind, value) {
        listing_id -> Text,
        organization_id -> Text,
        kind -> Text,
        value -> Text,
    }
}

diesel::table! {
    listing_access (listing_id, organization_id) {
        listing_id -> Text,
        organization_id -> Text,
    }
}

diesel::table! {
    offers (id) {
        id -> Text,
        listing_id -> Text,
        organization_id -> Text,
        name -> Text,
        currency -> Text,
        billing_interval -> Text,
        recurring_amount -> BigInt,
        term_months -> Integer,
        usage_prices -> Text,
        free_metrics -> Text,
        trial_days -> Integer,
        requires_approval -> Bool,
        auto_renew_default -> Bool,
        private -> Bool,
        state -> Text,
        created_at -> Timestamp,
        archived_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    offer_access (offer_id, organization_id) {
        offer_id -> Text,
        organization_id -> Text,
    }
}

diesel::table! {
    datasets (id) {
        id -> Text,
        listing_id -> Text,
        organization_id -> Text,
        name -> Text,
        description -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    revisions (id) {
        id -> Text,
        dataset_id -> Text,
        listing_id -> Text,
        organization_id -> Text,
        state -> Text,
        comment -> Text,
        revoke_reason -> Nullable<Text>,
        created_at -> Timestamp,
        finalized_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    assets (id) {
        id -> Text,
        revision_id -> Text,
        dataset_id -> Text,
        listing_id -> Text,
        organization_id -> Text,
        name -> Text,
        media_type -> Text,
        size -> BigInt,
        sha256 -> Text,
        storage_key -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(listings -> organizations (organization_id));
diesel::joinable!(offers -> listings (listing_id));
diesel::joinable!(datasets -> listings (listing_id));
diesel::joinable!(revisions -> datasets (dataset_id));
diesel::joinable!(assets -> revisions (revision_id));

diesel::table! {
    subscriptions (id) {
        id -> Text,
        organization_id -> Text,
        provider_organization_id -> Text,
        listing_id -> Text,
        offer_id -> Text,
        status -> Text,
        message -> Text,
        decision_reason -> Nullable<Text>,
        prices -> Nullable<Text>,
        trial_end -> Nullable<Timestamp>,
        term_start -> Nullable<Timestamp>,
        term_end -> Nullable<Timestamp>,
        current_period_start -> Nullable<Timestamp>,
        current_period_end -> Nullable<Timestamp>,
        auto_renew -> Bool,
        cancel_at -> Nullable<Timestamp>,
        request_expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        ended_at -> Nullable<Timestamp>,
        billing_anchor -> Nullable<Timestamp>,
        term_end_reminded_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        organization_id -> Text,
        subscription_id -> Text,
        listing_id -> Text,
        valid_from -> Timestamp,
        valid_until -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        suspended_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    usage_events (organization_id, id) {
        organization_id -> Text,
        id -> Text,
        subscription_id -> Text,
        metric -> Text,
        quantity -> BigInt,
        occurred_at -> Timestamp,
        day -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    usage_monthly (month, subscription_id, metric) {
        month -> Text,
        subscription_id -> Text,
        metric -> Text,
        quantity -> BigInt,
    }
}

diesel::joinable!(grants -> subscriptions (subscription_id));
diesel::joinable!(usage_events -> subscriptions (subscription_id));

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        organization_id -> Text,
        url -> Text,
        events -> Text,
        secret -> Text,
        created_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        organization_id -> Text,
        kind -> Text,
        event_id -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    billing_runs (id) {
        id -> Text,
        period -> Text,
        started_by -> Text,
        invoices_created -> Integer,
        invoices_updated -> Integer,
        invoices_removed -> Integer,
        failures -> Text,
        created_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    invoices (id) {
        id -> Text,
        organization_id -> Text,
        period -> Text,
        currency -> Text,
        status -> Text,
        number -> Nullable<Text>,
        tax_rate_bps -> Integer,
        subtotal -> BigInt,
        tax -> BigInt,
        total -> BigInt,
        amount_paid -> BigInt,
        amount_credited -> BigInt,
        tax_credited -> BigInt,
        payment_failure -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finalized_at -> Nullable<Timestamp>,
        paid_at -> Nullable<Timestamp>,
        voided_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    invoice_lines (id) {
        id -> Text,
        invoice_id -> Text,
        organization_id -> Text,
        provider_organization_id -> Text,
        subscription_id -> Text,
        source -> Text,
        charge_key -> Text,
        service_period -> Text,
        description -> Text,
        quantity -> BigInt,
        unit_amount_decimal -> Nullable<Text>,
        amount -> BigInt,
        tiers -> Text,
        fee_bps -> Integer,
        position -> Integer,
        created_at -> Timestamp,
    }
}

diesel::table! {
    credit_notes (id) {
        id -> Text,
        invoice_id -> Text,
        organization_id -> Text,
        reason -> Text,
        subtotal -> BigInt,
        tax -> BigInt,
        total -> BigInt,
        created_by -> Text,
        created_at -> Timestamp,
        adjustment_key -> Nullable<Text>,
    }
}

diesel::table! {
    credit_note_lines (id) {
        id -> Text,
        credit_note_id -> Text,
        invoice_line_id -> Text,
        provider_organization_id -> Text,
        amount -> BigInt,
    }
}

diesel::table! {
    payments (id) {
        id -> Text,
        invoice_id -> Text,
        organization_id -> Text,
        method -> Text,
        reference -> Text,
        amount -> BigInt,
        status -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    invoice_counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    payment_jobs (id) {
        id -> Text,
        invoice_id -> Text,
        organization_id -> Text,
        attempt -> Integer,
        amount -> BigInt,
        currency -> Text,
        status -> Text,
        tries -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        payment_intent_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    stripe_customers (organization_id) {
        organization_id -> Text,
        customer_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    stripe_events (id) {
        id -> Text,
        event_type -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    overdue_invoices (invoice_id) {
        invoice_id -> Text,
        organization_id -> Text,
        since -> Timestamp,
    }
}

diesel::joinable!(invoice_lines -> invoices (invoice_id));
diesel::joinable!(credit_notes -> invoices (invoice_id));
diesel::joinable!(credit_note_lines -> credit_notes (credit_note_id));
diesel::joinable!(credit_note_lines -> invoice_lines (invoice_line_id));
diesel::joinable!(payments -> invoices (invoice_id));
diesel::joinable!(payment_jobs -> invoices (invoice_id));
diesel::joinable!(overdue_invoices -> invoices (invoice_id));

diesel::table! {
    console_sessions (id) {
        id -> Text,
        organization_id -> Text,
        user_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(console_sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    usage_monthly,
    organizations,
    users,
    api_keys,
    refresh_tokens,
    server_secrets,
    idempotency_keys,
    audit_events,
    listings,
    listing_labels,
    listing_access,
    offers,
    offer_access,
    datasets,
    revisions,
    assets,
    subscriptions,
    grants,
    usage_events,
    webhook_endpoints,
    outbox,
    billing_runs,
    invoices,
    invoice_lines,
    credit_notes,
    credit_note_lines,
    payments,
    invoice_counters,
    payment_jobs,
    stripe_customers,
    stripe_events,
    overdue_invoices,
    console_sessions,
);
