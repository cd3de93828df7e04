//! Plumbing shared by the charts: rendering into a `String`, the palette,
//! root attributes, titles, messages and legends.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::error::Error;

/// The drawing area every chart draws on: plotters' SVG backend writing
/// into an in-memory `String`.
pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Plotters' errors are boxed: on an in-memory SVG backend they cannot
/// really happen, so one type for all of them keeps the drawing code short.
pub(crate) type DrawResult<T> = Result<T, Box<dyn Error>>;

/// Ten colours readable on a light background, distinct from each other
/// (the Tableau 10 palette). Series and slices cycle through them.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Text colour: near-black, softer than pure black on white.
pub(crate) const INK: RGBColor = RGBColor(33, 37, 41);
/// Secondary text and things that are off (down nodes, their links).
pub(crate) const MUTED: RGBColor = RGBColor(150, 150, 150);

/// Legend and label text longer than this is cut, so one long hostile
/// name cannot push the rest of a chart out of view.
pub(crate) const MAX_LABEL_CHARS: usize = 28;

pub(crate) fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Keeps sizes within what a dashboard can show: plotters' layout
/// arithmetic misbehaves on areas smaller than its margins, and a huge
/// request should not make a huge string.
fn clamp_size(width: u32, height: u32) -> (u32, u32) {
    (width.clamp(160, 4096), height.clamp(120, 4096))
}

/// Renders a chart into an SVG string, `attrs` added to the root element.
///
/// Plotters cannot put extra attributes on the root `<svg>` (its
/// `SVGBackend` writes a fixed `width/height/viewBox/xmlns` tag), so they
/// are spliced in after `<svg `. Names are static and values integers, so
/// nothing needs escaping. If drawing fails anyway (the only backend
/// error is I/O, and there is none on a `String`) the partial output is
/// discarded and an SVG saying "chart failed: ..." is returned instead:
/// a dashboard tile showing the reason beats a panicking server.
pub(crate) fn render<F>(width: u32, height: u32, attrs: &[(&str, usize)], draw: F) -> String
where
    F: FnOnce(&Area) -> DrawResult<()>,
{
    let (width, height) = clamp_size(width, height);
    let mut buf = String::new();
    let outcome = {
        let root = SVGBackend::with_string(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into))
    };
    match outcome {
        Ok(()) => with_root_attrs(&buf, attrs),
        Err(e) => failure_svg(width, height, attrs, &e.to_string()),
    }
}

fn attr_string(attrs: &[(&str, usize)]) -> String {
    attrs
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\" "))
        .collect()
}

fn with_root_attrs(svg: &str, attrs: &[(&str, usize)]) -> String {
    svg.replacen("<svg ", &format!("<svg {}", attr_string(attrs)), 1)
}

/// Written by hand because plotters just failed; so it escapes itself.
fn failure_svg(width: u32, height: u32, attrs: &[(&str, usize)], message: &str) -> String {
    format!(
        "<svg {}width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
         font-family=\"sans-serif\" font-size=\"14\" fill=\"#b00020\">chart failed: {}</text>\n</svg>\n",
        attr_string(attrs),
        width / 2,
        height / 2,
        escape(message)
    )
}

/// XML escaping for text we write ourselves (plotters escapes its own).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to `MAX_LABEL_CHARS` characters (not bytes: names may be
/// any UTF-8), marking the cut with an ellipsis.
pub(crate) fn short(text: &str) -> String {
    if text.chars().count() <= MAX_LABEL_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

pub(crate) fn text_style(size: f64, colour: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&colour)
        .pos(Pos::new(h, v))
}

/// Draws `title` at the top and returns the area below it (the whole
/// area when there is no title, so no blank band is left).
pub(crate) fn titled<'a>(area: &Area<'a>, title: &str) -> DrawResult<Area<'a>> {
    if title.is_empty() {
        return Ok(area.clone());
    }
    Ok(area.titled(&short_title(title), ("sans-serif", 20).into_font().color(&INK))?)
}

/// Titles get more room than labels but are still bounded.
fn short_title(title: &str) -> String {
    if title.chars().count() <= 3 * MAX_LABEL_CHARS {
        return title.to_owned();
    }
    let mut cut: String = title.chars().take(3 * MAX_LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Centres a grey message ("no samples yet", "no data") in `area`.
pub(crate) fn message(area: &Area, text: &str) -> DrawResult<()> {
    let (w, h) = area.dim_in_pixel();
    let style = text_style(18.0, MUTED, HPos::Center, VPos::Center);
    area.draw(&Text::new(text.to_owned(), (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

/// Draws a legend, one row per entry (a colour swatch and the label),
/// from the top-left of `area`. Rows that do not fit are summarised as
/// "+K more" rather than drawn over each other.
pub(crate) fn legend(area: &Area, entries: &[(String, RGBColor)]) -> DrawResult<()> {
    const ROW: i32 = 20;
    let rows = ((area.dim_in_pixel().1 as i32 - 10) / ROW).max(1) as usize;
    let shown = if entries.len() > rows {
        rows - 1
    } else {
        entries.len()
    };
    let style = text_style(15.0, INK, HPos::Left, VPos::Center);
    for (i, (label, colour)) in entries.iter().take(shown).enumerate() {
        let y = 10 + i as i32 * ROW;
        area.draw(&Rectangle::new([(4, y - 6), (16, y + 6)], colour.filled()))?;
        area.draw(&Text::new(short(label), (22, y), style.clone()))?;
    }
    if shown < entries.len() {
        let y = 10 + shown as i32 * ROW;
        let more = format!("+{} more", entries.len() - shown);
        area.draw(&Text::new(more, (22, y), style.color(&MUTED)))?;
    }
    Ok(())
}

/// Width for a legend whose longest label has `chars` characters: wide
/// enough for the text (plotters' estimate is ~0.6 em per character)
/// but never more than a third of the chart.
pub(crate) fn legend_width(chars: usize, total_width: u32) -> u32 {
    let wanted = 30 + 7 * chars.min(MAX_LABEL_CHARS) as u32;
    // Not `clamp`: on a narrow chart the third is below 60, and clamp panics.
    wanted.max(60).min(total_width / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&apos;x&apos;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn short_cuts_on_characters_not_bytes() {
        let long = "é".repeat(100);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), MAX_LABEL_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(short("web"), "web");
    }

    #[test]
    fn root_attrs_are_spliced_into_the_svg_tag() {
        let svg = render(200, 100, &[("data-x", 7)], |_| Ok(()));
        assert!(svg.starts_with("<svg data-x=\"7\" width=\"200\""), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_failed_drawing_becomes_an_explanatory_svg() {
        let svg = render(200, 100, &[("data-x", 0)], |_| Err("bad <thing>".into()));
        assert!(svg.contains("data-x=\"0\""));
        assert!(svg.contains("chart failed: bad &lt;thing&gt;"), "{svg}");
    }

    #[test]
    fn sizes_are_clamped() {
        let svg = render(0, 0, &[], |_| Ok(()));
        assert!(svg.contains("width=\"160\" height=\"120\""), "{svg}");
    }
}
