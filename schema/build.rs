// The migrations are embedded at compile time (`embed_migrations!`), which does not tell
// cargo about a migration added later: rebuild when anything under them changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
