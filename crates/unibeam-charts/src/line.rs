//! Metrics over time: one line per series, a marker per sample.

use crate::svg::{self, Area, DrawResult};
use plotters::prelude::*;

/// One metric's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// `(x, y)`: x in seconds on any origin the caller likes (negative
    /// seconds before now, or seconds since start), y the value in the
    /// chart's `y_unit`. Non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// What [`line_chart`] draws.
#[derive(Debug, Clone, Copy)]
pub struct LineChart<'a> {
    pub title: &'a str,
    /// The y axis' unit ("MB", "%", or "" for a plain count).
    pub y_unit: &'a str,
    pub series: &'a [Series],
    pub width: u32,
    pub height: u32,
}

/// Values are clamped to this magnitude so that `max - min` stays finite:
/// plotters' tick arithmetic on an infinite range is meaningless.
const LIMIT: f64 = 1e300;

/// Renders `chart` as an SVG document.
///
/// The x axis shows the caller's seconds, in seconds, minutes or hours
/// depending on the span (the axis reads "time (s)", "time (min)" or
/// "time (h)"), keeping the caller's origin and sign, so "-5" on a
/// "time (min)" axis is five minutes before the caller's zero. The y axis
/// always includes zero, so a flat line near the top is not mistaken for
/// a big swing. Each sample gets a `<circle>` (and nothing else in the
/// chart is a circle); the root carries `data-points` = the longest
/// series' sample count after dropping non-finite points. With no
/// samples at all it says "no samples yet".
pub fn line_chart(chart: &LineChart) -> String {
    let cleaned: Vec<Vec<(f64, f64)>> = chart.series.iter().map(|s| clean(&s.points)).collect();
    let longest = cleaned.iter().map(Vec::len).max().unwrap_or(0);
    svg::render(chart.width, chart.height, &[("data-points", longest)], |root| {
        let area = svg::titled(root, chart.title)?;
        if longest == 0 {
            return svg::message(&area, "no samples yet");
        }
        draw(&area, chart, &cleaned)
    })
}

/// Drops non-finite points, clamps huge ones, sorts by time (a line
/// through unsorted samples would zigzag backwards).
fn clean(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| (x.clamp(-LIMIT, LIMIT), y.clamp(-LIMIT, LIMIT)))
        .collect();
    kept.sort_by(|a, b| a.0.total_cmp(&b.0));
    kept
}

/// The time unit for a span of `seconds`: its divisor and name.
fn time_unit(seconds: f64) -> (f64, &'static str) {
    if seconds > 10.0 * 3600.0 {
        (3600.0, "h")
    } else if seconds > 600.0 {
        (60.0, "min")
    } else {
        (1.0, "s")
    }
}

/// `(min, max)` of `values`, widened so the range is never empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

fn y_bounds(series: &[Vec<(f64, f64)>]) -> (f64, f64) {
    let ys = series.iter().flatten().map(|p| p.1).chain([0.0]);
    let (lo, hi) = bounds(ys);
    (lo, hi + (hi - lo) * 0.05)
}

fn draw(area: &Area, chart: &LineChart, series: &[Vec<(f64, f64)>]) -> DrawResult<()> {
    let (xlo, xhi) = bounds(series.iter().flatten().map(|p| p.0));
    let (scale, unit) = time_unit(xhi - xlo);
    let (xlo, xhi) = bounds([xlo / scale, xhi / scale].into_iter());
    let (ylo, yhi) = y_bounds(series);

    let longest_name = chart.series.iter().map(|s| s.name.chars().count()).max();
    let width = svg::legend_width(longest_name.unwrap_or(0), area.dim_in_pixel().0);
    let (plot, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - width);

    let mut ctx = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
    let mut mesh = ctx.configure_mesh();
    mesh.x_labels(6)
        .y_labels(6)
        .x_desc(format!("time ({unit})"))
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(220, 220, 220))
        .axis_desc_style(("sans-serif", 15).into_font().color(&svg::INK))
        .label_style(("sans-serif", 14).into_font().color(&svg::INK));
    if !chart.y_unit.is_empty() {
        mesh.y_desc(chart.y_unit);
    }
    mesh.draw()?;

    let marker = if series.iter().map(Vec::len).max().unwrap_or(0) > 150 {
        1
    } else {
        2
    };
    for (i, points) in series.iter().enumerate() {
        let colour = svg::color(i);
        let scaled = points.iter().map(|&(x, y)| (x / scale, y));
        ctx.draw_series(LineSeries::new(scaled.clone(), colour.stroke_width(2)))?;
        ctx.draw_series(scaled.map(|p| Circle::new(p, marker, colour.filled())))?;
    }

    let entries: Vec<(String, RGBColor)> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| (legend_name(&s.name), svg::color(i)))
        .collect();
    svg::legend(&legend_area.margin(10, 0, 0, 0), &entries)
}

fn legend_name(name: &str) -> String {
    if name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        name.to_owned()
    }
}

/// Tick labels: few significant digits, scientific past a million (so a
/// huge value cannot widen the label column off the chart).
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_owned();
    }
    if !(1e-2..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_owned(),
            points,
        }
    }

    fn render(series: &[Series]) -> String {
        line_chart(&LineChart {
            title: "BEAM memory",
            y_unit: "MB",
            series,
            width: 640,
            height: 300,
        })
    }

    fn ramp(n: usize) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| (i as f64 * 5.0 - 600.0, (i % 17) as f64 * 1.5))
            .collect()
    }

    #[test]
    fn one_circle_per_point_per_series() {
        let svg = render(&[
            series("total", ramp(10)),
            series("processes", ramp(10)),
            series("ets", ramp(10)),
        ]);
        assert_eq!(svg.matches("<circle").count(), 30);
        assert!(svg.contains("data-points=\"10\""));
        for colour in ["#1F77B4", "#D62728", "#2CA02C"] {
            let line = format!("stroke=\"{colour}\" stroke-width=\"2\"");
            assert_eq!(svg.matches(&line).count(), 1, "one line in {colour}");
        }
        for name in ["total", "processes", "ets", "MB", "BEAM memory"] {
            assert!(svg.contains(name), "{name} missing");
        }
    }

    #[test]
    fn data_points_is_the_longest_series_after_filtering() {
        let mut points = ramp(5);
        points.push((f64::NAN, 1.0));
        points.push((1.0, f64::INFINITY));
        let svg = render(&[series("a", points), series("b", ramp(3))]);
        assert!(svg.contains("data-points=\"5\""), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 8);
    }

    #[test]
    fn names_and_titles_are_escaped() {
        let evil = "<script>alert(1)</script>";
        let svg = line_chart(&LineChart {
            title: evil,
            y_unit: "<b>",
            series: &[series(evil, ramp(2))],
            width: 640,
            height: 300,
        });
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn no_samples_says_so() {
        for all in [
            vec![],
            vec![series("a", vec![])],
            vec![series("a", vec![(f64::NAN, f64::NAN)])],
        ] {
            let svg = render(&all);
            assert!(svg.contains("no samples yet"), "{svg}");
            assert!(svg.contains("data-points=\"0\""));
            assert_eq!(svg.matches("<circle").count(), 0);
            assert!(svg.trim_end().ends_with("</svg>"));
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let cases = [
            vec![(0.0, 1.0)],
            vec![(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)],
            vec![(3.0, 0.0), (3.0, 0.0)],
            vec![
                (-f64::MAX, f64::MAX),
                (f64::MAX, -f64::MAX),
                (0.0, f64::MIN_POSITIVE),
            ],
            vec![(1e300, 1e300), (1e300, -1e300)],
            vec![(f64::NEG_INFINITY, 0.0), (0.0, f64::NAN), (1.0, -3.0)],
        ];
        for points in cases {
            let n = clean(&points).len();
            let svg = render(&[series("s", points)]);
            assert!(svg.contains(&format!("data-points=\"{n}\"")));
            assert_eq!(svg.matches("<circle").count(), n);
            assert!(!svg.contains("chart failed"), "{svg}");
        }
    }

    #[test]
    fn tiny_and_zero_sizes_still_render() {
        let svg = line_chart(&LineChart {
            title: "t",
            y_unit: "",
            series: &[series("a", ramp(4))],
            width: 0,
            height: 0,
        });
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn time_axis_unit_follows_the_span() {
        assert_eq!(time_unit(300.0).1, "s");
        assert_eq!(time_unit(3600.0).1, "min");
        assert_eq!(time_unit(86400.0).1, "h");
        let svg = render(&[series("a", ramp(720))]);
        assert!(svg.contains("time (min)"));
    }

    #[test]
    fn tick_numbers_are_short() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(150.0), "150");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(2.5e6), "2.5e6");
        assert_eq!(number(-40.0), "-40");
    }

    #[test]
    fn realistic_dashboard_size_is_fast_and_small() {
        let all: Vec<Series> = (0..7)
            .map(|i| series(&format!("metric {i}"), ramp(720)))
            .collect();
        let started = Instant::now();
        let svg = line_chart(&LineChart {
            title: "node",
            y_unit: "MB",
            series: &all,
            width: 900,
            height: 360,
        });
        let took = started.elapsed();
        println!("7 series x 720 points: {} bytes in {took:?}", svg.len());
        assert_eq!(svg.matches("<circle").count(), 7 * 720);
        assert!(svg.contains("data-points=\"720\""));
        assert!(svg.len() < 1_000_000, "{} bytes", svg.len());
        assert!(took.as_secs() < 5, "{took:?}");
    }
}
