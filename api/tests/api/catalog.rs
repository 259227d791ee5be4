//! The catalog: listings, offers, datasets and revisions, as providers and subscribers use them.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{TestApp, User};

fn listing_body(title: &str, visibility: &str) -> Value {
    json!({"title": title, "summary": "Hourly observations", "description": "# Data\nStations.",
           "categories": ["weather"], "tags": ["hourly"], "visibility": visibility})
}

fn offer_body(name: &str) -> Value {
    json!({"name": name, "currency": "USD", "billing_interval": "monthly", "recurring_amount": 10000,
           "term_months": 12, "usage_prices": [], "trial_days": 0, "requires_approval": false, "auto_renew_default": true})
}

/// A published listing with one offer, a second after the last one; returns its id.
fn published(app: &TestApp, provider: &User, body: Value) -> String {
    app.clock.advance(chrono::Duration::seconds(1));
    let l = app.post("/v1/listings", Some(&provider.token), body);
    assert_eq!(l.status, 201, "{}", l.text);
    let id = l.json["id"].as_str().unwrap().to_string();
    let o = app.post(
        &format!("/v1/listings/{id}/offers"),
        Some(&provider.token),
        offer_body("Monthly"),
    );
    assert_eq!(o.status, 201, "{}", o.text);
    let p = app.post(
        &format!("/v1/listings/{id}/publish"),
        Some(&provider.token),
        json!({}),
    );
    assert_eq!(p.status, 200, "{}", p.text);
    id
}

fn ids(reply: &crate::helpers::Reply) -> Vec<String> {
    reply.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_provider_creates_prices_and_publishes_a_listing() {
    let app = TestApp::spawn();
    let p = app.signup();
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        listing_body("Weather", "public"),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    assert_eq!(l.json["state"], "draft");
    assert_eq!(l.json["provider"]["id"], p.org_id.as_str());
    assert_eq!(
        l.json["description_html"],
        "<h1>Data</h1>\n<p>Stations.</p>\n"
    );
    let id = l.json["id"].as_str().unwrap();
    assert!(id.starts_with("lst_"));

    let early = app.post(
        &format!("/v1/listings/{id}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(early.problem(409), "no_active_offer");
    let o = app.post(
        &format!("/v1/listings/{id}/offers"),
        Some(&p.token),
        offer_body("Monthly"),
    );
    assert_eq!(o.status, 201, "{}", o.text);
    assert_eq!(
        o.json["recurring_amount"],
        json!({"amount": 10000, "currency": "USD"})
    );
    let published = app.post(
        &format!("/v1/listings/{id}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(published.json["state"], "published");
    assert!(published.json["published_at"].is_string());
    assert_eq!(
        app.post(
            &format!("/v1/listings/{id}/publish"),
            Some(&p.token),
            json!({})
        )
        .problem(409),
        "invalid_state"
    );

    // PATCH changes only the fields given.
    let patched = app.patch(
        &format!("/v1/listings/{id}"),
        Some(&p.token),
        json!({"title": "Weather v2"}),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["title"], "Weather v2");
    assert_eq!(patched.json["summary"], "Hourly observations");
    assert_eq!(
        patched.json["description_html"],
        "<h1>Data</h1>\n<p>Stations.</p>\n"
    );
    // A new description is shown rendered anew (rendered descriptions are kept per listing).
    let described = app.patch(
        &format!("/v1/listings/{id}"),
        Some(&p.token),
        json!({"description": "## Hourly *data*"}),
    );
    assert_eq!(
        described.json["description_html"], "<h2>Hourly <em>data</em></h2>\n",
        "{}",
        described.text
    );
    assert_eq!(
        app.get(&format!("/v1/listings/{id}"), Some(&p.token)).json["description_html"],
        "<h2>Hourly <em>data</em></h2>\n"
    );

    let archived = app.post(
        &format!("/v1/listings/{id}/archive"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(archived.json["state"], "archived");
    let again = app.patch(
        &format!("/v1/listings/{id}"),
        Some(&p.token),
        json!({"title": "x"}),
    );
    assert_eq!(again.problem(409), "listing_archived");
    let mine = app.get("/v1/listings?mine=true", Some(&p.token));
    assert_eq!(ids(&mine), vec![id.to_string()]);
    assert!(
        ids(&app.get("/v1/listings", Some(&p.token))).is_empty(),
        "archived listings leave the catalog"
    );
}

#[test]
fn offer_rules_are_checked_and_the_field_named() {
    let app = TestApp::spawn();
    let p = app.signup();
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        listing_body("Prices", "public"),
    );
    let id = l.json["id"].as_str().unwrap();
    let tiers = |t: Value| json!([{"metric": "rows", "model": "graduated", "tiers": t}]);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"currency": "XXQ"}), "currency"),
        (json!({"currency": "usd"}), "currency"),
        (json!({"billing_interval": "weekly"}), "billing_interval"),
        (json!({"recurring_amount": 10.5}), "recurring_amount"),
        (json!({"recurring_amount": -1}), "recurring_amount"),
        (json!({"recurring_amount": "100"}), "recurring_amount"),
        (json!({"term_months": 0}), "term_months"),
        (json!({"term_months": 37}), "term_months"),
        (json!({"trial_days": -1}), "trial_days"),
        (json!({"name": ""}), "name"),
        (
            json!({"usage_prices": [{"metric": "rows", "model": "per_unit"}]}),
            "usage_prices[0].unit_amount_decimal",
        ),
        (
            json!({"usage_prices": [{"metric": "rows", "model": "per_unit", "unit_amount_decimal": 0.05}]}),
            "usage_prices[0].unit_amount_decimal",
        ),
        (
            json!({"usage_prices": [{"metric": "rows", "model": "per_unit", "unit_amount_decimal": "0.0000000000001"}]}),
            "usage_prices[0].unit_amount_decimal",
        ),
        (
            json!({"usage_prices": [{"metric": "Rows!", "model": "per_unit", "unit_amount_decimal": "1"}]}),
            "usage_prices[0].metric",
        ),
        (
            json!({"usage_prices": [{"metric": "rows", "model": "stepped", "unit_amount_decimal": "1"}]}),
            "usage_prices[0].model",
        ),
        (
            json!({"usage_prices": tiers(json!([{"up_to": 10, "unit_amount_decimal": "1"}, {"up_to": 5, "unit_amount_decimal": "1"}, {"up_to": null, "unit_amount_decimal": "1"}]))}),
            "usage_prices[0].tiers[1].up_to",
        ),
        (
            json!({"usage_prices": tiers(json!([{"up_to": 10, "unit_amount_decimal": "1"}]))}),
            "usage_prices[0].tiers[0].up_to",
        ),
        (
            json!({"usage_prices": tiers(json!([]))}),
            "usage_prices[0].tiers",
        ),
        (
            json!({"usage_prices": tiers(json!([{"up_to": null, "unit_amount_decimal": "1", "flat_amount": 1.5}]))}),
            "usage_prices[0].tiers[0].flat_amount",
        ),
        (
            json!({"usage_prices": [{"metric": "rows", "model": "per_unit", "unit_amount_decimal": "1"}], "free_metrics": ["rows"]}),
            "free_metrics[0]",
        ),
        (
            json!({"private_to_organization_ids": ["org_doesnotexist"]}),
            "private_to_organization_ids[0]",
        ),
    ];
    for (change, field) in cases {
        let mut body = offer_body("Bad");
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.post(
            &format!("/v1/listings/{id}/offers"),
            Some(&p.token),
            body.clone(),
        );
        assert_eq!(r.status, 422, "{change}: {}", r.text);
        assert!(
            r.fields().contains(&field.to_string()),
            "{change}: expected {field}, got {:?}",
            r.fields()
        );
    }
    // Every broken field at once, not only the first.
    let empty = app.post(
        &format!("/v1/listings/{id}/offers"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(
        empty.fields(),
        [
            "name",
            "currency",
            "billing_interval",
            "recurring_amount",
            "term_months"
        ]
    );
    let mut two_wrong = offer_body("Bad");
    two_wrong["recurring_amount"] = json!("100");
    two_wrong["term_months"] = json!([12]);
    let r = app.post(
        &format!("/v1/listings/{id}/offers"),
        Some(&p.token),
        two_wrong,
    );
    assert_eq!(
        r.fields(),
        ["recurring_amount", "term_months"],
        "{}",
        r.text
    );
    // Nothing was half-written.
    assert!(ids(&app.get(&format!("/v1/listings/{id}/offers"), Some(&p.token))).is_empty());

    let mut good = offer_body("Metered");
    good["currency"] = json!("JPY");
    good["usage_prices"] = json!([
        {"metric": "api_calls", "model": "per_unit", "unit_amount_decimal": "0.05"},
        {"metric": "rows", "model": "volume", "tiers": [
            {"up_to": 1000, "unit_amount_decimal": "0.5", "flat_amount": 100}, {"up_to": null, "unit_amount_decimal": "0.25"}]}
    ]);
    good["free_metrics"] = json!(["bytes_downloaded"]);
    // Integers written with a zero fraction are integers (as JSON Schema counts them).
    good["recurring_amount"] = json!(10000.0);
    good["term_months"] = json!(1.2e1);
    let r = app.post(&format!("/v1/listings/{id}/offers"), Some(&p.token), good);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json["recurring_amount"],
        json!({"amount": 10000, "currency": "JPY"})
    );
    assert_eq!(r.json["term_months"], 12);
    assert_eq!(r.json["usage_prices"][0]["unit_amount_decimal"], "0.05");
    assert_eq!(
        r.json["usage_prices"][1]["tiers"][0],
        json!({"up_to": 1000, "unit_amount_decimal": "0.5", "flat_amount": 100})
    );
    assert_eq!(r.json["free_metrics"], json!(["bytes_downloaded"]));
    let offer_id = r.json["id"].as_str().unwrap();
    let archived = app.post(
        &format!("/v1/offers/{offer_id}/archive"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(archived.json["state"], "archived");
}

#[test]
fn search_finds_matches_filters_sorts_and_pages() {
    let app = TestApp::spawn();
    let p = app.signup();
    let b = app.signup();
    let weather = published(
        &app,
        &p,
        json!({"title": "Rain gauges", "summary": "Precipitation", "description": "Millimetres per hour",
        "categories": ["weather"], "tags": ["hourly", "europe"], "visibility": "public"}),
    );
    let tides = published(
        &app,
        &p,
        json!({"title": "Tide tables", "summary": "Sea levels", "categories": ["ocean"],
        "tags": ["hourly"], "visibility": "public"}),
    );
    let forecast = published(
        &app,
        &p,
        json!({"title": "Another forecast", "summary": "Rain tomorrow", "categories": ["weather"],
        "tags": ["daily"], "visibility": "public"}),
    );
    let draft = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "Rain draft", "summary": "s", "visibility": "public"}),
    );
    let draft = draft.json["id"].as_str().unwrap().to_string();

    // Full text over title, summary, description and tags; drafts never show.
    let rain = app.get("/v1/listings?q=rain", Some(&b.token));
    let mut found = ids(&rain);
    found.sort();
    let mut expected = vec![weather.clone(), forecast.clone()];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(
        ids(&app.get("/v1/listings?q=millimetres", None)),
        vec![weather.clone()]
    );
    assert_eq!(
        ids(&app.get("/v1/listings?q=europe", None)),
        vec![weather.clone()]
    );
    // A "word" of combining marks alone is no word, on either database.
    assert_eq!(
        ids(&app.get("/v1/listings?q=%CD%85%CD%85%20europe", None)),
        vec![weather.clone()]
    );
    assert!(
        ids(&app.get("/v1/listings?q=rain%20sea", None)).is_empty(),
        "every word must match"
    );
    assert!(
        ids(&app.get("/v1/listings?q=%22%29%28*%20OR", None)).is_empty(),
        "query syntax is just text"
    );
    assert!(!found.contains(&draft));

    // Filters.
    let mut weather_hits = ids(&app.get("/v1/listings?category=weather", None));
    weather_hits.sort();
    assert_eq!(weather_hits, expected);
    assert_eq!(
        ids(&app.get("/v1/listings?category=weather&tag=hourly", None)),
        vec![weather.clone()]
    );
    assert_eq!(
        ids(&app.get("/v1/listings?tag=daily", None)),
        vec![forecast.clone()]
    );
    assert_eq!(
        ids(&app.get(&format!("/v1/listings?provider={}", b.org_id), None)).len(),
        0
    );
    assert_eq!(
        ids(&app.get(&format!("/v1/listings?provider={}", p.org_id), None)).len(),
        3
    );

    // Sorts: newest first, title, relevance.
    assert_eq!(
        ids(&app.get("/v1/listings?sort=newest", None)),
        vec![forecast.clone(), tides.clone(), weather.clone()]
    );
    assert_eq!(
        ids(&app.get("/v1/listings?sort=title", None)),
        vec![forecast.clone(), weather.clone(), tides.clone()]
    );
    let relevance = ids(&app.get("/v1/listings?q=rain&sort=relevance", None));
    assert_eq!(relevance.len(), 2);
    assert_eq!(
        app.get("/v1/listings?sort=relevance", None).fields(),
        vec!["sort"]
    );
    assert_eq!(
        app.get("/v1/listings?sort=cheapest", None).fields(),
        vec!["sort"]
    );

    // Pages of one add up, for each sort.
    for query in ["sort=newest", "sort=title", "q=rain"] {
        let paged: Vec<String> = app
            .all_pages(&format!("/v1/listings?{query}"), &b.token, 1)
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect();
        let whole = ids(&app.get(&format!("/v1/listings?{query}"), Some(&b.token)));
        assert_eq!(paged, whole, "{query}");
    }
    let bad = app.get("/v1/listings?cursor=nonsense", None);
    assert_eq!(bad.fields(), vec!["cursor"]);
}

#[test]
fn forged_cursors_are_refused_by_every_list_on_both_databases() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let app = TestApp::spawn();
    let p = app.signup();
    let listing = published(&app, &p, listing_body("Tides", "public"));
    let encode = |raw: &str| URL_SAFE_NO_PAD.encode(raw);
    // Instants chrono reads but no database row can hold, and text holding NUL.
    let catalog = [
        (
            "newest",
            r#"{"newest":{"micros":-1000000000000000000,"id":"x"}}"#,
        ),
        (
            "newest",
            r#"{"newest":{"micros":9223372036854775807,"id":"x"}}"#,
        ),
        ("newest", r#"{"newest":{"micros":1,"id":"a\u0000b"}}"#),
        ("title", r#"{"title":{"title":"a\u0000","id":"x"}}"#),
    ];
    for (sort, raw) in catalog {
        for token in [None, Some(p.token.as_str())] {
            let r = app.get(
                &format!("/v1/listings?sort={sort}&cursor={}", encode(raw)),
                token,
            );
            assert_eq!(r.status, 422, "{raw}: {}", r.text);
            assert_eq!(r.fields(), ["cursor"], "{raw}");
        }
    }
    let lists = [
        "/v1/listings?mine=true&cursor=".to_string(),
        format!("/v1/listings/{listing}/offers?cursor="),
        "/v1/subscriptions?cursor=".to_string(),
        "/v1/grants?cursor=".to_string(),
    ];
    for raw in ["-1000000000000000000|x", "9223372036854775807|x", "1|a\0b"] {
        for list in &lists {
            let r = app.get(&format!("{list}{}", encode(raw)), Some(&p.token));
            assert_eq!(r.status, 422, "{list} {raw:?}: {}", r.text);
        }
    }
}

#[test]
fn searches_narrowed_by_category_and_tag_follow_edits() {
    let app = TestApp::spawn();
    let p = app.signup();
    let listing = |title: &str, categories: Value, tags: Value| {
        json!({"title": title, "summary": "Sea levels", "categories": categories, "tags": tags,
               "visibility": "public"})
    };
    let gauges = published(
        &app,
        &p,
        listing(
            "Tide gauges",
            json!(["Océan", "sea level"]),
            json!(["hourly"]),
        ),
    );
    let tables = published(
        &app,
        &p,
        listing("Tide tables", json!(["océan"]), json!(["daily"])),
    );
    let almanac = published(
        &app,
        &p,
        listing("Tide almanac", json!(["ocean"]), json!(["hourly"])),
    );
    let search = |sort: &str, filters: &str| {
        let mut found = ids(&app.get(&format!("/v1/listings?q=tide&sort={sort}&{filters}"), None));
        found.sort();
        found
    };
    let both = |a: &String, b: &String| {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    };
    // (filters, the listings found), for each sort; a label is matched whole.
    let cases = [
        ("category=oc%C3%A9an", both(&gauges, &tables)),
        ("category=ocean", vec![almanac.clone()]),
        ("category=sea%20level", vec![gauges.clone()]),
        ("category=sea", vec![]),
        ("category=oc%C3%A9an&tag=hourly", vec![gauges.clone()]),
        ("category=ocean&tag=daily", vec![]),
    ];
    for sort in ["relevance", "newest", "title"] {
        for (filters, expected) in &cases {
            assert_eq!(&search(sort, filters), expected, "{sort} {filters}");
        }
    }
    // The index's word for the category "océan" ("c" and its UTF-8 bytes in hex) is not a
    // word of any listing's text.
    assert!(ids(&app.get("/v1/listings?q=c6f63c3a9616e", None)).is_empty());

    // An edit moves a listing between categories and tags at once.
    let moved = app.patch(
        &format!("/v1/listings/{tables}"),
        Some(&p.token),
        json!({"categories": ["sea level"], "tags": ["hourly"]}),
    );
    assert_eq!(moved.status, 200, "{}", moved.text);
    for sort in ["relevance", "newest", "title"] {
        assert_eq!(
            search(sort, "category=oc%C3%A9an"),
            vec![gauges.clone()],
            "{sort}"
        );
        assert_eq!(
            search(sort, "category=sea%20level&tag=hourly"),
            both(&gauges, &tables),
            "{sort}"
        );
        assert!(search(sort, "tag=daily").is_empty(), "{sort}");
    }
}

/// Four listings holding "harbour", oldest first: the oldest is the best match of all, the
/// third the next best; the second and the newest name it once, in a longer text.
fn harbour_listings(app: &TestApp, p: &User) -> [String; 4] {
    let once = "Quay cranes, berths, vessel calls and cargo tonnage for the harbour, \
                with pilotage, tugs, bunkering, customs and warehousing records.";
    let listing = |title: &str, description: &str| {
        json!({"title": title, "summary": "Port operations", "description": description,
               "categories": ["maritime"], "tags": ["ports"], "visibility": "public"})
    };
    [
        published(
            app,
            p,
            listing("Harbour harbour harbour", "Harbour berths."),
        ),
        published(app, p, listing("Port calls", once)),
        published(app, p, listing("Harbour tides", "Harbour levels.")),
        published(app, p, listing("Port logistics", once)),
    ]
}

#[test]
fn relevance_ranks_the_newest_matches_then_lists_older_ones_newest_first() {
    // Every match ranked (the default window is far larger than four).
    let app = TestApp::spawn();
    let p = app.signup();
    let [best, plain_old, second, _plain_new] = harbour_listings(&app, &p);
    let ranked = ids(&app.get("/v1/listings?q=harbour", None));
    assert_eq!(ranked.len(), 4);
    assert_eq!(ranked[..2], [best.clone(), second.clone()]);
    assert!(ranked[2..].contains(&plain_old));

    // Only the two newest matches ranked: the best match of all is listed last, after the
    // other older one, newest first.
    let app = TestApp::builder().catalog_relevance_window(2).spawn();
    let p = app.signup();
    let [best, plain_old, second, plain_new] = harbour_listings(&app, &p);
    let expected = vec![second, plain_new, plain_old, best];
    assert_eq!(ids(&app.get("/v1/listings?q=harbour", None)), expected);
    // Pages cross from the ranked matches to the older ones without a gap or a repeat.
    for limit in [1, 3] {
        let paged: Vec<String> = app
            .all_pages("/v1/listings?q=harbour&sort=relevance", &p.token, limit)
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(paged, expected, "pages of {limit}");
    }
    // Filters narrow the matches before the window is taken.
    assert_eq!(
        ids(&app.get("/v1/listings?q=harbour&tag=ports&category=maritime", None)),
        expected
    );
    assert!(ids(&app.get("/v1/listings?q=harbour&category=weather", None)).is_empty());
    // A cursor pointing before the first match, or absurdly far, is not one the server issued.
    use base64::Engine;
    for offset in ["-1", "9223372036854775807"] {
        let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{{\"offset\":{offset}}}"));
        let r = app.get(&format!("/v1/listings?q=harbour&cursor={cursor}"), None);
        assert_eq!(r.fields(), vec!["cursor"], "offset {offset}: {}", r.text);
    }
}

#[test]
fn private_listings_and_offers_show_only_to_those_they_name() {
    let app = TestApp::spawn();
    let p = app.signup();
    let b = app.signup();
    let x = app.signup();
    let mut body = listing_body("Secret stations", "private");
    body["allowed_organization_ids"] = json!([b.org_id]);
    let secret = published(&app, &p, body);
    let public = published(&app, &p, listing_body("Open stations", "public"));
    let private_offer = {
        let mut o = offer_body("For B only");
        o["private_to_organization_ids"] = json!([b.org_id]);
        let r = app.post(&format!("/v1/listings/{public}/offers"), Some(&p.token), o);
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    };

    // Buyer B is named: sees the listing and the offer, but not who else is named.
    assert!(ids(&app.get("/v1/listings?q=stations", Some(&b.token))).contains(&secret));
    let seen = app.get(&format!("/v1/listings/{secret}"), Some(&b.token));
    assert_eq!(seen.status, 200);
    assert!(seen.json.get("allowed_organization_ids").is_none());
    let b_offers = ids(&app.get(&format!("/v1/listings/{public}/offers"), Some(&b.token)));
    assert!(b_offers.contains(&private_offer));
    assert!(!app
        .get(&format!("/v1/listings/{public}/offers"), Some(&b.token))
        .text
        .contains(&b.org_id));

    // Outsider X and anonymous callers: as if they did not exist.
    assert!(!ids(&app.get("/v1/listings?q=stations", Some(&x.token))).contains(&secret));
    assert!(!ids(&app.get("/v1/listings?q=stations", None)).contains(&secret));
    assert_eq!(
        app.get(&format!("/v1/listings/{secret}"), Some(&x.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.get(&format!("/v1/listings/{secret}"), None)
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.get(&format!("/v1/listings/{secret}/offers"), Some(&x.token))
            .problem(404),
        "not_found"
    );
    assert!(
        !ids(&app.get(&format!("/v1/listings/{public}/offers"), Some(&x.token)))
            .contains(&private_offer)
    );
    assert!(
        !ids(&app.get(&format!("/v1/listings/{public}/offers"), None)).contains(&private_offer)
    );

    // The provider sees whom it named.
    let own = app.get(&format!("/v1/listings/{secret}"), Some(&p.token));
    assert_eq!(own.json["allowed_organization_ids"], json!([b.org_id]));
}

#[test]
fn other_organizations_and_weak_credentials_change_nothing() {
    let app = TestApp::spawn();
    let p = app.signup();
    let x = app.signup();
    let public = published(&app, &p, listing_body("Weather", "public"));
    let draft = app
        .post(
            "/v1/listings",
            Some(&p.token),
            listing_body("Draft", "public"),
        )
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = json!({"title": "hijack"});
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{public}"),
            Some(&x.token),
            patch.clone()
        )
        .problem(403),
        "forbidden"
    );
    assert_eq!(
        app.patch(
            &format!("/v1/listings/{draft}"),
            Some(&x.token),
            patch.clone()
        )
        .problem(404),
        "not_found"
    );
    assert_eq!(
        app.post(
            &format!("/v1/listings/{public}/offers"),
            Some(&x.token),
            offer_body("x")
        )
        .status,
        403
    );
    assert_eq!(
        app.post(
            &format!("/v1/listings/{public}/archive"),
            Some(&x.token),
            json!({})
        )
        .status,
        403
    );
    assert_eq!(
        app.post(
            &format!("/v1/listings/{public}/datasets"),
            Some(&x.token),
            json!({"name": "d"})
        )
        .status,
        403
    );
    assert_eq!(
        app.get(&format!("/v1/listings/{public}"), None).json["title"],
        "Weather"
    );

    // Roles and scopes: finance users and read keys cannot write; write keys can.
    let fin = app.add_member(&p, "finance");
    assert_eq!(
        app.post(
            "/v1/listings",
            Some(&fin.token),
            listing_body("F", "public")
        )
        .problem(403),
        "forbidden"
    );
    let (_, read_key) = app.api_key(&p, &["read"]);
    let (_, write_key) = app.api_key(&p, &["read", "write"]);
    let (_, billing_key) = app.api_key(&p, &["billing"]);
    assert_eq!(
        app.post("/v1/listings", Some(&read_key), listing_body("R", "public"))
            .status,
        403
    );
    assert_eq!(
        app.post(
            "/v1/listings",
            Some(&write_key),
            listing_body("W", "public")
        )
        .status,
        201
    );
    assert_eq!(app.get("/v1/listings", Some(&billing_key)).status, 403);
    let member = app.add_member(&p, "member");
    assert_eq!(
        app.post(
            "/v1/listings",
            Some(&member.token),
            listing_body("M", "public")
        )
        .status,
        201
    );
}

#[test]
fn listing_fields_are_validated() {
    let app = TestApp::spawn();
    let p = app.signup();
    let r = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "", "summary": "x".repeat(501), "visibility": "secret",
        "categories": ["ok", ""], "tags": "not-a-list"}),
    );
    assert_eq!(r.problem(422), "validation_failed");
    assert_eq!(
        r.fields(),
        vec!["tags"],
        "a wrong type is reported first, by serde"
    );
    let r = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "", "summary": "x".repeat(501), "visibility": "secret",
        "categories": ["ok", ""], "allowed_organization_ids": [p.org_id]}),
    );
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "allowed_organization_ids[0]",
            "categories[1]",
            "summary",
            "title",
            "visibility"
        ]
    );
    assert!(
        app.get("/v1/listings?mine=true", Some(&p.token)).json["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Catalog pages are kept in memory for a few seconds; a listing written through the server
/// shows in them at once, and what one organization's page holds never reaches another.
#[test]
fn catalog_pages_show_listing_changes_at_once() {
    let app = TestApp::spawn();
    let p = app.signup();
    let b = app.signup();
    let id = published(&app, &p, listing_body("Tidal gauges", "public"));
    let page = |token: Option<&str>| app.get("/v1/listings?q=tidal", token);
    let first = page(None);
    assert_eq!(ids(&first), vec![id.clone()]);
    assert_eq!(page(None).text, first.text, "the same page again");
    assert!(
        app.get("/metrics", None)
            .text
            .contains(r#"catalog_pages_total{source="cache"} 1"#),
        "the second read came from the page cache"
    );
    assert!(app
        .get("/metrics", None)
        .text
        .contains("catalog_searches_total 1"));

    let patch = |body: Value| app.patch(&format!("/v1/listings/{id}"), Some(&p.token), body);
    let patched = patch(json!({"title": "Tidal gauges, hourly"}));
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(page(None).json["data"][0]["title"], "Tidal gauges, hourly");

    // Made private for B: gone for anonymous readers, shown to B, and each keeps its page.
    let private = patch(json!({"visibility": "private", "allowed_organization_ids": [b.org_id]}));
    assert_eq!(private.status, 200, "{}", private.text);
    let own = page(Some(&p.token));
    assert_eq!(
        own.json["data"][0]["allowed_organization_ids"],
        json!([b.org_id])
    );
    let for_b = page(Some(&b.token));
    assert_eq!(ids(&for_b), vec![id.clone()]);
    assert!(
        !for_b.text.contains("allowed_organization_ids"),
        "{}",
        for_b.text
    );
    assert!(ids(&page(None)).is_empty());
    assert!(ids(&page(Some(&b.token))).contains(&id));

    let second = published(&app, &p, listing_body("Tidal currents", "public"));
    assert_eq!(ids(&page(None)), vec![second.clone()]);

    let archived = app.post(
        &format!("/v1/listings/{id}/archive"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(archived.status, 200, "{}", archived.text);
    assert_eq!(ids(&page(Some(&b.token))), vec![second]);
}

#[test]
fn descriptions_render_inert() {
    let app = TestApp::spawn();
    let p = app.signup();
    let mut body = listing_body("<script>alert('t')</script>", "public");
    body["description"] =
        json!("Hi <script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))");
    let l = app.post("/v1/listings", Some(&p.token), body);
    assert_eq!(l.status, 201);
    let html = l.json["description_html"].as_str().unwrap();
    assert!(
        !html.contains("<script") && !html.contains("<img") && !html.contains("javascript:"),
        "{html}"
    );
    assert_eq!(
        l.json["title"], "<script>alert('t')</script>",
        "JSON carries the text as written; it is data, not markup"
    );
}

#[test]
fn revisions_move_open_finalized_revoked_and_hide_while_open() {
    let app = TestApp::spawn();
    let p = app.signup();
    let b = app.signup();
    let listing = published(&app, &p, listing_body("Weather", "public"));
    let ds = app.post(
        &format!("/v1/listings/{listing}/datasets"),
        Some(&p.token),
        json!({"name": "observations"}),
    );
    assert_eq!(ds.status, 201, "{}", ds.text);
    let ds = ds.json["id"].as_str().unwrap().to_string();
    assert!(ds.starts_with("ds_"));
    assert_eq!(
        app.get(&format!("/v1/datasets/{ds}"), Some(&b.token)).json["name"],
        "observations"
    );
    assert_eq!(
        ids(&app.get(&format!("/v1/listings/{listing}/datasets"), None)),
        vec![ds.clone()]
    );

    let rev = app.post(
        &format!("/v1/datasets/{ds}/revisions"),
        Some(&p.token),
        json!({"comment": "first"}),
    );
    assert_eq!(rev.status, 201, "{}", rev.text);
    assert_eq!(rev.json["state"], "open");
    let rev = rev.json["id"].as_str().unwrap().to_string();
    let no_body = app.send(
        Method::POST,
        &format!("/v1/datasets/{ds}/revisions"),
        Some(&p.token),
        None,
        &[],
    );
    assert_eq!(
        no_body.status, 201,
        "the body is optional: {}",
        no_body.text
    );

    // Open revisions are the provider's alone.
    assert_eq!(
        app.get(&format!("/v1/revisions/{rev}"), Some(&b.token))
            .problem(404),
        "not_found"
    );
    assert!(ids(&app.get(&format!("/v1/datasets/{ds}/revisions"), Some(&b.token))).is_empty());
    assert_eq!(
        ids(&app.get(&format!("/v1/datasets/{ds}/revisions"), Some(&p.token))).len(),
        2
    );

    assert_eq!(
        app.post(
            &format!("/v1/revisions/{rev}/finalize"),
            Some(&p.token),
            json!({})
        )
        .problem(409),
        "empty_revision"
    );
    assert_eq!(
        app.post(
            &format!("/v1/revisions/{rev}/revoke"),
            Some(&p.token),
            json!({"reason": "x"})
        )
        .problem(409),
        "invalid_state"
    );
    assert_eq!(
        app.post(
            &format!("/v1/revisions/{rev}/finalize"),
            Some(&b.token),
            json!({})
        )
        .status,
        404
    );
}

#[test]
fn archiving_an_offer_on_a_hidden_listing_answers_as_for_no_offer() {
    let app = TestApp::spawn();
    let (p, x) = (app.signup(), app.signup());
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        listing_body("Hidden", "private"),
    );
    let lid = l.json["id"].as_str().unwrap();
    let o = app.post(
        &format!("/v1/listings/{lid}/offers"),
        Some(&p.token),
        offer_body("Plan"),
    );
    assert_eq!(o.status, 201, "{}", o.text);
    let real = app.post(
        &format!("/v1/offers/{}/archive", o.json["id"].as_str().unwrap()),
        Some(&x.token),
        json!({}),
    );
    let absent = app.post(
        "/v1/offers/ofr_doesnotexist/archive",
        Some(&x.token),
        json!({}),
    );
    assert_eq!(real.status, 404, "{}", real.text);
    assert_eq!(real.json, absent.json);
}
