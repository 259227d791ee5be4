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

/// Rendered Markdown kept per listing, so catalog pages do not render the same descriptions
/// on every request (rendering and sanitizing were a quarter of a page's CPU). An entry is
/// used only while the listing's Markdown is the same text; the cache is bounded by bytes
/// and starts over past its budget.
struct RenderCache {
    /// Listing id → (its Markdown, the HTML rendered from it).
    entries: std::collections::HashMap<String, (String, String)>,
    bytes: usize,
}

const RENDER_CACHE_BYTES: usize = 16 * 1024 * 1024;

static RENDERED: std::sync::LazyLock<std::sync::Mutex<RenderCache>> =
    std::sync::LazyLock::new(|| {
        std::sync::Mutex::new(RenderCache {
            entries: std::collections::HashMap::new(),
            bytes: 0,
        })
    });

/// [`render`] for the description of listing `id`, from the cache when that description
/// was rendered before.
pub fn render_listing(id: &str, markdown: &str) -> String {
    if let Ok(cache) = RENDERED.lock() {
        if let Some((source, html)) = cache.entries.get(id) {
            if source == markdown {
                return html.clone();
            }
        }
    }
    let html = render(markdown);
    if let Ok(mut cache) = RENDERED.lock() {
        let size = id.len() + markdown.len() + html.len();
        if cache.bytes + size > RENDER_CACHE_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        if size <= RENDER_CACHE_BYTES {
            if let Some((old_source, old_html)) = cache
                .entries
                .insert(id.to_string(), (markdown.to_string(), html.clone()))
            {
                cache.bytes -= id.len() + old_source.len() + old_html.len();
            }
            cache.bytes += size;
        }
    }
    html
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_changed_description_is_rendered_again() {
        let first = super::render_listing("lst_render_test", "# One");
        assert!(first.contains("<h1>One</h1>"), "{first}");
        assert_eq!(super::render_listing("lst_render_test", "# One"), first);
        let second = super::render_listing("lst_render_test", "# Two");
        assert!(second.contains("<h1>Two</h1>"), "{second}");
    }

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
