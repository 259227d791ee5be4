//! Markdown from providers, rendered for display: raw HTML is shown as text, never run, and
//! the result is sanitized (no scripts, event handlers or `javascript:` links).

use pulldown_cmark::{html, Event, Options, Parser};

pub fn render(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .map(|event| match event {
        // Raw HTML becomes text, which the renderer escapes.
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, parser);
    // Built once: constructing the sanitizer allocates its tag and attribute tables, and a
    // catalog page renders up to 200 descriptions.
    static SANITIZER: std::sync::LazyLock<ammonia::Builder<'static>> =
        std::sync::LazyLock::new(|| {
            let mut builder = ammonia::Builder::default();
            builder.link_rel(Some("noopener noreferrer nofollow"));
            builder
        });
    SANITIZER.clean(&out).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_and_handlers_are_inert() {
        let html = super::render("# Data\n<script>alert(1)</script>\n<img src=x onerror=alert(2)>\n\n[x](javascript:alert(3))");
        assert!(html.contains("<h1>Data</h1>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "shown as text: {html}");
    }
}
