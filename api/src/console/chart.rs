//! Bar charts drawn on the server as SVG: no script, no external resource. The numbers are
//! always also in a table beside the chart, which is what assistive technology reads.

use maud::{html, Markup};

/// One bar: its label on the axis, its height (any integer unit), and its value as shown.
pub struct Bar {
    pub label: String,
    pub value: i64,
    pub shown: String,
}

const WIDTH: i64 = 640;
const HEIGHT: i64 = 240;
const TOP: i64 = 12;
const BOTTOM: i64 = 36;
const SIDE: i64 = 8;

/// A bar chart; `id` must be unique on the page (it names the title and description).
pub fn bars(id: &str, title: &str, summary: &str, bars: &[Bar]) -> Markup {
    let plot = HEIGHT - TOP - BOTTOM;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let n = bars.len().max(1) as i64;
    let slot = (WIDTH - 2 * SIDE) / n;
    let bar_width = (slot * 7 / 10).max(2);
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
                role="img" aria-labelledby={ (title_id) " " (desc_id) } focusable="false" {
                title id=(title_id) { (title) }
                desc id=(desc_id) { (summary) }
                line x1=(SIDE) y1=(TOP + plot) x2=(WIDTH - SIDE) y2=(TOP + plot) class="axis" {}
                @for (i, b) in bars.iter().enumerate() {
                    @let h = i64::try_from(i128::from(b.value.max(0)) * i128::from(plot) / i128::from(max)).unwrap_or(plot);
                    @let x = SIDE + i as i64 * slot + (slot - bar_width) / 2;
                    g {
                        title { (b.label) ": " (b.shown) }
                        rect x=(x) y=(TOP + plot - h) width=(bar_width) height=(h.max(1)) class="bar" {}
                        text x=(x + bar_width / 2) y=(HEIGHT - BOTTOM + 16) text-anchor="middle" class="tick" { (b.label) }
                    }
                }
            }
            figcaption { (title) " (the numbers are in the table below)" }
        }
    }
}
