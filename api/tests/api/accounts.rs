//! Sign-up, sign-in, refresh, `/v1/me`, members and API keys, as clients use them.

use serde_json::json;

use crate::helpers::{TestApp, User, PASSWORD};

#[test]
fn signup_then_me_shows_the_admin_of_the_new_organization() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let me = app.get("/v1/me", Some(&ada.token));
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["role"], "admin");
    assert_eq!(me.json["user"]["email"], ada.email.as_str());
    assert_eq!(me.json["organization"]["id"], ada.org_id.as_str());
    assert!(ada.org_id.starts_with("org_") && ada.user_id.starts_with("usr_"));
}

#[test]
fn signup_answers_with_tokens_and_refuses_a_taken_email() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let again = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": ada.email.to_uppercase(), "password": PASSWORD, "name": "Ada", "organization_name": "Other"}),
    );
    assert_eq!(again.problem(409), "email_taken");
    let fresh = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": "new@example.com", "password": PASSWORD, "name": "New", "organization_name": "New Org"}),
    );
    assert_eq!(fresh.status, 201);
    assert_eq!(fresh.json["token_type"], "Bearer");
    assert!(fresh.json["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(fresh.header("cache-control"), Some("no-store"));
}

#[test]
fn sign_in_with_the_right_password_only() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let ok = app.sign_in(&ada.email, &ada.password);
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["role"], "admin");
    let me = app.get("/v1/me", Some(ok.json["access_token"].as_str().unwrap()));
    assert_eq!(me.status, 200);
    assert_eq!(
        app.sign_in(&ada.email, "wrong password entirely")
            .problem(401),
        "unauthorized"
    );
    assert_eq!(
        app.sign_in("nobody@example.com", PASSWORD).problem(401),
        "unauthorized"
    );
}

#[test]
fn refresh_rotates_and_reuse_of_a_spent_token_revokes_the_family() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let first = app.post(
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": ada.refresh}),
    );
    assert_eq!(first.status, 200, "{}", first.text);
    let newer = first.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(newer, ada.refresh);
    assert_eq!(
        app.get("/v1/me", Some(first.json["access_token"].as_str().unwrap()))
            .status,
        200
    );

    // The spent token comes back: refused, and the whole family dies with it.
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": ada.refresh})
        )
        .problem(401),
        "unauthorized"
    );
    assert_eq!(
        app.post("/v1/auth/refresh", None, json!({"refresh_token": newer}))
            .problem(401),
        "unauthorized"
    );

    // Another session of the same user is untouched.
    let other = app.sign_in(&ada.email, &ada.password);
    let other_refresh = other.json["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": other_refresh})
        )
        .status,
        200
    );
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": "mkt_rt_nonsense"})
        )
        .status,
        401
    );
}

#[test]
fn api_keys_are_shown_once_work_and_die_when_revoked() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let created = app.post(
        "/v1/api-keys",
        Some(&ada.token),
        json!({"name": "etl", "scopes": ["read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.json["key"].as_str().unwrap().to_string();
    let id = created.json["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("mkt_sk_") && id.starts_with("key_"));
    assert_eq!(created.json["scopes"], json!(["read"]));

    let me = app.get("/v1/me", Some(&key));
    assert_eq!(me.status, 200);
    assert_eq!(me.json["credential"], "api_key");

    let listed = app.get("/v1/api-keys", Some(&ada.token));
    assert_eq!(listed.status, 200);
    assert!(!listed.text.contains(&key), "the secret is never listed");
    assert_eq!(listed.json["data"][0]["hint"], &key[key.len() - 4..]);

    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}"), Some(&ada.token))
            .status,
        204
    );
    assert_eq!(app.get("/v1/me", Some(&key)).problem(401), "unauthorized");
    assert!(app.get("/v1/api-keys", Some(&ada.token)).json["data"][0]["revoked_at"].is_string());
}

#[test]
fn key_rights_are_its_scopes_within_its_creators_role() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let (_, read_key) = app.api_key(&ada, &["read"]);
    let (_, all_key) = app.api_key(&ada, &["read", "write", "billing"]);
    // A read-scoped key cannot POST.
    let r = app.post(
        "/v1/organization/members",
        Some(&read_key),
        json!({"email": "x@example.com", "name": "X", "password": PASSWORD, "role": "member"}),
    );
    assert_eq!(r.problem(403), "forbidden");
    // Even an all-scopes key never manages keys or members.
    assert_eq!(
        app.post("/v1/api-keys", Some(&all_key), json!({"name": "k"}))
            .problem(403),
        "forbidden"
    );
    let r = app.post(
        "/v1/organization/members",
        Some(&all_key),
        json!({"email": "y@example.com", "name": "Y", "password": PASSWORD, "role": "member"}),
    );
    assert_eq!(r.problem(403), "forbidden");
    assert_eq!(
        app.get("/v1/api-keys", Some(&all_key)).problem(403),
        "forbidden"
    );
    // Unknown scopes are named.
    let bad = app.post(
        "/v1/api-keys",
        Some(&ada.token),
        json!({"name": "k", "scopes": ["read", "admin"]}),
    );
    assert_eq!(bad.problem(422), "validation_failed");
    assert_eq!(bad.fields(), vec!["scopes[1]"]);
}

#[test]
fn members_get_roles_and_members_cannot_manage_the_organization() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let bob = app.add_member(&ada, "member");
    let fin = app.add_member(&ada, "finance");
    assert_eq!(app.get("/v1/me", Some(&bob.token)).json["role"], "member");
    assert_eq!(app.get("/v1/me", Some(&fin.token)).json["role"], "finance");
    assert_eq!(
        app.post("/v1/api-keys", Some(&bob.token), json!({"name": "k"}))
            .problem(403),
        "forbidden"
    );
    let r = app.post(
        "/v1/organization/members",
        Some(&bob.token),
        json!({"email": "z@example.com", "name": "Z", "password": PASSWORD, "role": "admin"}),
    );
    assert_eq!(r.problem(403), "forbidden");
    let listed = app.all_pages("/v1/organization/members", &ada.token, 50);
    assert_eq!(listed.len(), 3);
    let bad_role = app.post(
        "/v1/organization/members",
        Some(&ada.token),
        json!({"email": "q@example.com", "name": "Q", "password": PASSWORD, "role": "operator"}),
    );
    assert_eq!(bad_role.problem(422), "validation_failed");
    assert_eq!(bad_role.fields(), vec!["role"]);
}

#[test]
fn removing_a_member_ends_their_sessions_and_keys() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let second_admin = app.add_member(&ada, "admin");
    let (_, their_key) = app.api_key(&second_admin, &["read"]);
    assert_eq!(app.get("/v1/me", Some(&their_key)).status, 200);
    // Their access token was just used: the server keeps its caller a moment, and the
    // removal must not leave that behind.
    assert_eq!(app.get("/v1/me", Some(&second_admin.token)).status, 200);

    let removed = app.delete(
        &format!("/v1/organization/members/{}", second_admin.user_id),
        Some(&ada.token),
    );
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_eq!(
        app.get("/v1/me", Some(&their_key)).status,
        401,
        "their key dies"
    );
    assert_eq!(
        app.get("/v1/me", Some(&second_admin.token)).status,
        401,
        "their access token dies"
    );
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": second_admin.refresh})
        )
        .status,
        401
    );
    assert_eq!(
        app.sign_in(&second_admin.email, PASSWORD).status,
        401,
        "they cannot sign in"
    );
    assert_eq!(
        app.all_pages("/v1/organization/members", &ada.token, 50)
            .len(),
        1
    );
    // Removing twice, or yourself, is refused.
    let again = app.delete(
        &format!("/v1/organization/members/{}", second_admin.user_id),
        Some(&ada.token),
    );
    assert_eq!(again.problem(404), "not_found");
    let me = app.delete(
        &format!("/v1/organization/members/{}", ada.user_id),
        Some(&ada.token),
    );
    assert_eq!(me.problem(409), "cannot_remove_self");

    // The address is free again: the organization may add the person back (a new user,
    // with none of the old one's sessions or keys), or they may sign up elsewhere.
    let back = app.post(
        "/v1/organization/members",
        Some(&ada.token),
        json!({"email": second_admin.email, "name": "Back", "password": "a new long password", "role": "member"}),
    );
    assert_eq!(back.status, 201, "{}", back.text);
    assert_ne!(back.json["id"], second_admin.user_id.as_str());
    assert_eq!(app.sign_in(&second_admin.email, PASSWORD).status, 401);
    let signed_in = app.sign_in(&second_admin.email, "a new long password");
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    let token = signed_in.json["access_token"].as_str().unwrap();
    let me = app.get("/v1/me", Some(token));
    assert_eq!(me.json["user"]["id"], back.json["id"]);
    assert_eq!(me.json["role"], "member");
    assert_eq!(
        app.get("/v1/me", Some(&their_key)).status,
        401,
        "the old user's key stays dead"
    );
    let twice = app.post(
        "/v1/organization/members",
        Some(&ada.token),
        json!({"email": second_admin.email, "name": "Twice", "password": PASSWORD, "role": "member"}),
    );
    assert_eq!(twice.problem(409), "email_taken");
    let removed = app.delete(
        &format!(
            "/v1/organization/members/{}",
            back.json["id"].as_str().unwrap()
        ),
        Some(&ada.token),
    );
    assert_eq!(removed.status, 204);
    let elsewhere = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": second_admin.email, "password": PASSWORD, "name": "Again", "organization_name": "Elsewhere"}),
    );
    assert_eq!(elsewhere.status, 201, "{}", elsewhere.text);
}

#[test]
fn another_organizations_members_and_keys_are_not_found() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let eve = app.signup();
    let (key_id, _) = app.api_key(&ada, &["read"]);
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{key_id}"), Some(&eve.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.delete(
            &format!("/v1/organization/members/{}", ada.user_id),
            Some(&eve.token)
        )
        .problem(404),
        "not_found"
    );
    let eve_members = app.all_pages("/v1/organization/members", &eve.token, 50);
    assert_eq!(eve_members.len(), 1);
    assert!(app.get("/v1/api-keys", Some(&eve.token)).json["data"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn cursor_pages_cover_the_list_exactly_once() {
    let app = TestApp::spawn();
    let ada = app.signup();
    for _ in 0..4 {
        app.add_member(&ada, "member");
    }
    let one_by_one = app.all_pages("/v1/organization/members", &ada.token, 1);
    let all = app.all_pages("/v1/organization/members", &ada.token, 200);
    assert_eq!(one_by_one.len(), 5);
    assert_eq!(one_by_one, all);
    let bad = app.get("/v1/organization/members?limit=500", Some(&ada.token));
    assert_eq!(bad.fields(), vec!["limit"]);
    let bad = app.get("/v1/organization/members?cursor=garbage!", Some(&ada.token));
    assert_eq!(bad.fields(), vec!["cursor"]);
}

#[test]
fn platform_users_come_from_the_command_line() {
    let app = TestApp::spawn();
    let run = |email: &str, role: &str, password: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_marketplace"))
            .args([
                "admin",
                "create-operator",
                "--email",
                email,
                "--name",
                "Platform",
                "--role",
                role,
            ])
            .env("MARKETPLACE_DATABASE_URL", &app.db.url)
            .env("MARKETPLACE_DATA_DIR", app.data_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("marketplace binary runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("ops@example.com", "operator", PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("fin@example.com", "finance", PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("short@example.com", "operator", "short");
    assert!(!out.status.success(), "a short password is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));

    let ops = app.sign_in("ops@example.com", PASSWORD);
    assert_eq!(ops.json["role"], "operator");
    let fin = app.sign_in("fin@example.com", PASSWORD);
    assert_eq!(fin.json["role"], "finance");
    assert_eq!(
        ops.json["organization"]["id"], fin.json["organization"]["id"],
        "one platform organization"
    );
}

#[test]
fn two_admins_removing_each_other_at_once_leave_one() {
    let app = TestApp::spawn();
    for round in 0..6 {
        let ada = app.signup();
        let bob = app.add_member(&ada, "admin");
        // Both callers were just seen, so both sit in the caller cache when they race.
        assert_eq!(app.get("/v1/me", Some(&ada.token)).status, 200);
        assert_eq!(app.get("/v1/me", Some(&bob.token)).status, 200);
        let (by_ada, by_bob) = std::thread::scope(|s| {
            let remove = |who: &User, whom: &User| {
                let path = format!("/v1/organization/members/{}", whom.user_id);
                let token = who.token.clone();
                let app = &app;
                s.spawn(move || app.delete(&path, Some(&token)))
            };
            let (a, b) = (remove(&ada, &bob), remove(&bob, &ada));
            (a.join().unwrap(), b.join().unwrap())
        });
        let statuses = [by_ada.status, by_bob.status];
        assert_eq!(
            statuses.iter().filter(|s| **s == 204).count(),
            1,
            "round {round}: {statuses:?} {} {}",
            by_ada.text,
            by_bob.text
        );
        assert!(statuses.contains(&401), "round {round}: {statuses:?}");
        let survivor = if by_ada.status == 204 { &ada } else { &bob };
        let members = app.all_pages("/v1/organization/members", &survivor.token, 50);
        assert_eq!(members.len(), 1, "round {round}");
        assert_eq!(members[0]["id"], survivor.user_id.as_str());
        assert_eq!(members[0]["role"], "admin");
    }
}

#[test]
fn one_mailbox_written_two_ways_is_one_account() {
    let app = TestApp::spawn();
    let signup = |email: &str| {
        app.post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": PASSWORD, "name": "José", "organization_name": "Café"}),
        )
    };
    let first = signup("jose\u{301}@b\u{fc}cher.example");
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(
        signup("jos\u{e9}@B\u{dc}CHER.example").problem(409),
        "email_taken"
    );
    assert_eq!(
        signup("jos\u{e9}@xn--bcher-kva.example").problem(409),
        "email_taken"
    );
    for spelling in [
        "jos\u{e9}@xn--bcher-kva.example",
        "jose\u{301}@b\u{fc}cher.example",
    ] {
        let signed_in = app.sign_in(spelling, PASSWORD);
        assert_eq!(signed_in.status, 200, "{spelling}: {}", signed_in.text);
    }
    let token = first.json["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/v1/me", Some(token)).json["user"]["email"],
        "jos\u{e9}@xn--bcher-kva.example"
    );
}

/// Addresses stored before they were normalized: rewritten at start, so the mailbox keeps
/// one account; where a second account was made meanwhile, both stay and each signs in
/// with its own password.
#[test]
fn addresses_stored_before_normalization_keep_one_account_per_mailbox() {
    use api::domain::accounts::normalize_stored_emails;
    use schema::diesel::prelude::*;
    use schema::schema::users;

    let app = TestApp::spawn();
    let store_as = |user_id: &str, spelling: &str| {
        diesel::update(users::table.find(user_id))
            .set(users::email.eq(spelling))
            .execute(&mut app.db.connect())
            .unwrap();
    };
    let signup = |email: &str, password: &str| {
        app.post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": password, "name": "V", "organization_name": "V"}),
        )
    };
    // One old account, stored as it was spelled then: normalized at start, then its
    // mailbox is taken in every spelling.
    let old = signup("victim@xn--bcher-kva.example", PASSWORD);
    assert_eq!(old.status, 201, "{}", old.text);
    let old_id = old.json["user"]["id"].as_str().unwrap().to_string();
    store_as(&old_id, "victim@b\u{fc}cher.example");
    assert_eq!(normalize_stored_emails(&mut app.db.connect()).unwrap(), 1);
    assert_eq!(
        signup("victim@xn--bcher-kva.example", PASSWORD).problem(409),
        "email_taken"
    );
    assert_eq!(
        app.sign_in("victim@b\u{fc}cher.example", PASSWORD).status,
        200
    );

    // Two accounts of one mailbox (one stored before, one made after): both kept, each
    // signs in with its own password.
    let first = signup("twin@xn--bcher-kva.example", PASSWORD);
    let first_id = first.json["user"]["id"].as_str().unwrap().to_string();
    store_as(&first_id, "twin@b\u{fc}cher.example");
    let second = signup("twin@xn--bcher-kva.example", "the second long password");
    assert_eq!(second.status, 201, "{}", second.text);
    assert_eq!(normalize_stored_emails(&mut app.db.connect()).unwrap(), 0);
    for (password, id) in [
        (PASSWORD, first_id.as_str()),
        (
            "the second long password",
            second.json["user"]["id"].as_str().unwrap(),
        ),
    ] {
        let signed_in = app.sign_in("twin@b\u{fc}cher.example", password);
        assert_eq!(signed_in.status, 200, "{}", signed_in.text);
        let token = signed_in.json["access_token"].as_str().unwrap();
        assert_eq!(app.get("/v1/me", Some(token)).json["user"]["id"], id);
    }
}
