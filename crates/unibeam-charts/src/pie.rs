//! Memory by type: a pie with a legend of names and percentages.

use crate::svg::{self, Area, DrawResult};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// Slices under this share get no percentage on the pie itself (the
/// labels of neighbouring slivers would overlap); the legend still
/// gives every slice's percentage.
const MIN_LABELLED_SHARE: f64 = 0.04;

/// Renders a pie of `slices` (name, value), e.g. `erlang:memory()` by type.
///
/// Values that are zero, negative or not finite are skipped (they have
/// no share of a whole). Slices go clockwise from 12 o'clock in the
/// order given, coloured like the line charts' series; the pie shows
/// each large slice's percentage and the legend on the right lists
/// every slice as "name  12.3%". The root carries `data-slices` = the
/// number of slices drawn; with none it says "no data".
pub fn pie_chart(title: &str, slices: &[(String, f64)], width: u32, height: u32) -> String {
    let kept: Vec<(&str, f64)> = slices
        .iter()
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .map(|(name, v)| (name.as_str(), *v))
        .collect();
    svg::render(width, height, &[("data-slices", kept.len())], |root| {
        let area = svg::titled(root, title)?;
        if kept.is_empty() {
            return svg::message(&area, "no data");
        }
        draw(&area, &kept)
    })
}

/// Each slice's share of the whole, computed on values divided by the
/// largest first so that the sum of huge values cannot overflow.
fn shares(values: &[f64]) -> Vec<f64> {
    let max = values.iter().copied().fold(0.0, f64::max);
    let scaled: Vec<f64> = values.iter().map(|v| v / max).collect();
    let total: f64 = scaled.iter().sum();
    scaled.iter().map(|v| v / total).collect()
}

fn draw(area: &Area, kept: &[(&str, f64)]) -> DrawResult<()> {
    let values: Vec<f64> = kept.iter().map(|s| s.1).collect();
    let shares = shares(&values);
    let colours: Vec<RGBColor> = (0..kept.len()).map(svg::color).collect();
    let labels: Vec<String> = shares
        .iter()
        .map(|&s| {
            if s >= MIN_LABELLED_SHARE {
                percent(s)
            } else {
                String::new()
            }
        })
        .collect();

    let (w, h) = area.dim_in_pixel();
    let longest = kept.iter().map(|s| s.0.chars().count() + 7).max().unwrap_or(0);
    let (pie_area, legend_area) = area.split_horizontally(w - svg::legend_width(longest, w));
    let (pw, _) = pie_area.dim_in_pixel();
    // `Pie` draws at backend (whole-SVG) coordinates, not the area's, so
    // the area's offset below the title is added by hand.
    let (x0, y0) = pie_area.get_base_pixel();
    let center = (x0 + pw as i32 / 2, y0 + h as i32 / 2);
    // Room outside the pie for the percentage labels.
    let radius = (f64::from(pw.min(h)) / 2.0 - 36.0).max(10.0);

    let mut pie = Pie::new(&center, &radius, &shares, &colours, &labels);
    pie.start_angle(-90.0);
    pie.label_offset(6.0);
    pie.label_style(svg::text_style(14.0, svg::INK, HPos::Left, VPos::Center));
    pie_area.draw(&pie)?;

    let entries: Vec<(String, RGBColor)> = kept
        .iter()
        .zip(&shares)
        .zip(colours)
        .map(|(((name, _), share), colour)| (format!("{}  {}", svg::short(name), percent(*share)), colour))
        .collect();
    svg::legend(&legend_area.margin(10, 0, 0, 0), &entries)
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(items: &[(&str, f64)]) -> Vec<(String, f64)> {
        items.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    fn memory() -> Vec<(String, f64)> {
        slices(&[
            ("processes", 40.0),
            ("binary", 30.0),
            ("code", 20.0),
            ("ets", 9.0),
            ("atom", 1.0),
        ])
    }

    #[test]
    fn draws_every_positive_slice_with_name_and_percentage() {
        let svg = pie_chart("memory by type", &memory(), 480, 300);
        assert!(svg.contains("data-slices=\"5\""));
        assert_eq!(svg.matches("<polygon").count(), 5);
        for text in ["processes  40.0%", "atom  1.0%", "memory by type", ">\n40.0%"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn skips_zero_negative_and_non_finite_values() {
        let input = slices(&[
            ("a", 1.0),
            ("zero", 0.0),
            ("neg", -5.0),
            ("nan", f64::NAN),
            ("inf", f64::INFINITY),
            ("b", 3.0),
        ]);
        let svg = pie_chart("m", &input, 480, 300);
        assert!(svg.contains("data-slices=\"2\""));
        assert!(svg.contains("a  25.0%") && svg.contains("b  75.0%"), "{svg}");
        assert!(!svg.contains("zero") && !svg.contains("neg"));
    }

    #[test]
    fn all_zero_says_no_data() {
        for input in [vec![], slices(&[("a", 0.0), ("b", -1.0)])] {
            let svg = pie_chart("m", &input, 480, 300);
            assert!(
                svg.contains("no data") && svg.contains("data-slices=\"0\""),
                "{svg}"
            );
            assert!(svg.trim_end().ends_with("</svg>"));
        }
    }

    #[test]
    fn huge_values_and_single_slices_do_not_panic() {
        let svg = pie_chart("m", &slices(&[("a", f64::MAX), ("b", f64::MAX)]), 480, 300);
        assert!(svg.contains("a  50.0%"), "{svg}");
        let svg = pie_chart("m", &slices(&[("only", 7.0)]), 0, 0);
        assert!(svg.contains("only  100.0%") && svg.contains("data-slices=\"1\""));
    }

    #[test]
    fn pie_is_centred_below_the_title() {
        // Pie draws in whole-SVG coordinates; without the area's offset
        // it would be centred on the whole 300 px height, under the title.
        let svg = pie_chart("memory by type", &memory(), 480, 300);
        let ys: Vec<i32> = svg
            .lines()
            .filter(|l| l.starts_with("<polygon"))
            .filter_map(|l| l.split("points=\"").nth(1))
            .flat_map(|p| {
                p.split_whitespace()
                    .filter_map(|xy| xy.split(',').nth(1)?.parse().ok())
            })
            .collect();
        let (top, bottom) = (ys.iter().min().unwrap(), ys.iter().max().unwrap());
        assert!((top + bottom) / 2 > 155, "pie spans y={top}..{bottom}");
    }

    #[test]
    fn names_are_escaped() {
        let svg = pie_chart("<script>", &slices(&[("<script>x</script>", 1.0)]), 480, 300);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }
}
