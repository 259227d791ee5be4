-- Catalog and data: listings, who may see private ones, offers, datasets, revisions, assets.
CREATE TABLE listings (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    description TEXT NOT NULL,
    categories TEXT NOT NULL,
    tags TEXT NOT NULL,
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    state TEXT NOT NULL CHECK (state IN ('draft', 'published', 'archived')),
    search_document TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    published_at TIMESTAMP,
    archived_at TIMESTAMP
);
CREATE INDEX listings_provider ON listings (organization_id, created_at, id);
CREATE INDEX listings_catalog_newest ON listings (state, published_at, id);
CREATE INDEX listings_catalog_title ON listings (state, title, id);

-- Categories and tags as rows, so the catalog filters by index.
CREATE TABLE listing_labels (
    listing_id TEXT NOT NULL REFERENCES listings (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('category', 'tag')),
    value TEXT NOT NULL,
    PRIMARY KEY (listing_id, kind, value)
);
CREATE INDEX listing_labels_value ON listing_labels (kind, value, listing_id);

-- The organizations a private listing is shown to.
CREATE TABLE listing_access (
    listing_id TEXT NOT NULL REFERENCES listings (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    PRIMARY KEY (listing_id, organization_id)
);
CREATE INDEX listing_access_organization ON listing_access (organization_id, listing_id);

CREATE TABLE offers (
    id TEXT PRIMARY KEY NOT NULL,
    listing_id TEXT NOT NULL REFERENCES listings (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    billing_interval TEXT NOT NULL CHECK (billing_interval IN ('monthly', 'one_time')),
    recurring_amount BIGINT NOT NULL,
    term_months INTEGER NOT NULL,
    usage_prices TEXT NOT NULL,
    free_metrics TEXT NOT NULL,
    trial_days INTEGER NOT NULL,
    requires_approval BOOLEAN NOT NULL,
    auto_renew_default BOOLEAN NOT NULL,
    private BOOLEAN NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'archived')),
    created_at TIMESTAMP NOT NULL,
    archived_at TIMESTAMP
);
CREATE INDEX offers_listing ON offers (listing_id, created_at, id);

-- The organizations a private offer is shown to.
CREATE TABLE offer_access (
    offer_id TEXT NOT NULL REFERENCES offers (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    PRIMARY KEY (offer_id, organization_id)
);

CREATE TABLE datasets (
    id TEXT PRIMARY KEY NOT NULL,
    listing_id TEXT NOT NULL REFERENCES listings (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX datasets_listing ON datasets (listing_id, created_at, id);

CREATE TABLE revisions (
    id TEXT PRIMARY KEY NOT NULL,
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    listing_id TEXT NOT NULL REFERENCES listings (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    state TEXT NOT NULL CHECK (state IN ('open', 'finalized', 'revoked')),
    comment TEXT NOT NULL,
    revoke_reason TEXT,
    created_at TIMESTAMP NOT NULL,
    finalized_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX revisions_dataset ON revisions (dataset_id, created_at, id);

CREATE TABLE assets (
    id TEXT PRIMARY KEY NOT NULL,
    revision_id TEXT NOT NULL REFERENCES revisions (id),
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    listing_id TEXT NOT NULL REFERENCES listings (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX assets_revision_name ON assets (revision_id, name);

-- Full-text search: a generated tsvector over each listing's search document, GIN-indexed.
ALTER TABLE listings ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', search_document)) STORED;
CREATE INDEX listings_search ON listings USING GIN (search_vector);
