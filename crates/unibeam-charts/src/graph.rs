//! A cluster's mesh: nodes on a ring, a straight line per connection.

use crate::svg::{self, Area, DrawResult};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::collections::BTreeSet;
use std::f64::consts::PI;

/// One node of a cluster, as its state file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    pub name: String,
    pub up: bool,
}

const UP: RGBColor = RGBColor(44, 160, 44);
const LINK: RGBColor = RGBColor(110, 110, 110);
const DEAD_LINK: RGBColor = RGBColor(210, 210, 210);

/// Renders `nodes` evenly on a circle and `links` (index pairs into
/// `nodes`) as straight lines between node centres.
///
/// An up node is a filled green `<circle>`; a down node a hollow grey one
/// with a grey name, and links touching it are pale. Links are
/// undirected: `(a, b)` and `(b, a)` are one line; links to themselves or
/// to indices past `nodes` are ignored, since they come from state files
/// that may be stale. The root carries `data-nodes` = nodes up,
/// `data-nodes-total` = all nodes and `data-links` = lines drawn.
pub fn cluster_graph(nodes: &[GraphNode], links: &[(usize, usize)], width: u32, height: u32) -> String {
    let drawn = valid_links(nodes.len(), links);
    let up = nodes.iter().filter(|n| n.up).count();
    let attrs = [
        ("data-nodes", up),
        ("data-nodes-total", nodes.len()),
        ("data-links", drawn.len()),
    ];
    svg::render(width, height, &attrs, |root| {
        if nodes.is_empty() {
            return svg::message(root, "no nodes");
        }
        draw(root, nodes, &drawn)
    })
}

/// In-range, non-self links, each unordered pair once, in a stable order.
fn valid_links(count: usize, links: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let set: BTreeSet<(usize, usize)> = links
        .iter()
        .filter(|&&(a, b)| a < count && b < count && a != b)
        .map(|&(a, b)| (a.min(b), a.max(b)))
        .collect();
    set.into_iter().collect()
}

/// Where node `i` of `n` goes: clockwise from 12 o'clock as unit-circle
/// direction `(cos, sin)` (screen y grows downwards).
fn direction(i: usize, n: usize) -> (f64, f64) {
    let angle = -PI / 2.0 + 2.0 * PI * i as f64 / n as f64;
    (angle.cos(), angle.sin())
}

fn draw(area: &Area, nodes: &[GraphNode], links: &[(usize, usize)]) -> DrawResult<()> {
    let (w, h) = area.dim_in_pixel();
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    // Leave room around the ring for names, more sideways than vertically.
    let ring = if nodes.len() == 1 {
        0.0
    } else {
        (cx - 90.0).min(cy - 45.0).max(10.0)
    };
    let n = nodes.len();
    let node_r = (PI * ring / n as f64 * 0.4).clamp(4.0, 16.0);
    let centre = |i: usize| {
        let (dx, dy) = direction(i, n);
        ((cx + ring * dx).round() as i32, (cy + ring * dy).round() as i32)
    };

    for &(a, b) in links {
        let both_up = nodes[a].up && nodes[b].up;
        let style = if both_up {
            LINK.stroke_width(2)
        } else {
            DEAD_LINK.stroke_width(1)
        };
        area.draw(&PathElement::new(vec![centre(a), centre(b)], style))?;
    }
    for (i, node) in nodes.iter().enumerate() {
        let style = if node.up {
            UP.filled()
        } else {
            svg::MUTED.stroke_width(2)
        };
        area.draw(&Circle::new(centre(i), node_r as i32, style))?;
        label(area, node, centre(i), direction(i, n), node_r, n == 1)?;
    }
    Ok(())
}

/// Puts the node's name just outside its circle, on the side facing away
/// from the ring's centre, anchored so the text runs outwards.
fn label(
    area: &Area,
    node: &GraphNode,
    at: (i32, i32),
    dir: (f64, f64),
    r: f64,
    alone: bool,
) -> DrawResult<()> {
    let dir = if alone { (0.0, 1.0) } else { dir };
    let h = match dir.0 {
        x if x > 0.3 => HPos::Left,
        x if x < -0.3 => HPos::Right,
        _ => HPos::Center,
    };
    let v = match dir.1 {
        y if y > 0.3 => VPos::Top,
        y if y < -0.3 => VPos::Bottom,
        _ => VPos::Center,
    };
    let gap = r + 4.0;
    let pos = (
        at.0 + (gap * dir.0).round() as i32,
        at.1 + (gap * dir.1).round() as i32,
    );
    let colour = if node.up { svg::INK } else { svg::MUTED };
    let style = svg::text_style(15.0, colour, h, v);
    area.draw(&Text::new(svg::short(&node.name), pos, style))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, up: bool) -> GraphNode {
        GraphNode {
            name: name.to_owned(),
            up,
        }
    }

    fn circles(svg: &str) -> Vec<&str> {
        svg.lines().filter(|l| l.starts_with("<circle")).collect()
    }

    #[test]
    fn three_nodes_three_links() {
        let nodes = [node("a@h", true), node("b@h", true), node("c@h", true)];
        let svg = cluster_graph(&nodes, &[(0, 1), (1, 2), (2, 0)], 400, 300);
        assert!(
            svg.contains("data-nodes=\"3\"") && svg.contains("data-links=\"3\""),
            "{svg}"
        );
        assert_eq!(circles(&svg).len(), 3);
        assert_eq!(svg.matches("<polyline").count(), 3);
        for name in ["a@h", "b@h", "c@h"] {
            assert!(svg.contains(name));
        }
    }

    #[test]
    fn a_down_node_is_hollow_and_grey() {
        let nodes = [node("up", true), node("down", false)];
        let svg = cluster_graph(&nodes, &[(0, 1)], 400, 300);
        assert!(svg.contains("data-nodes=\"1\"") && svg.contains("data-nodes-total=\"2\""));
        let c = circles(&svg);
        assert_eq!(c.len(), 2);
        assert!(
            c[0].contains("fill=\"#2CA02C\"") && c[0].contains("stroke=\"none\""),
            "{}",
            c[0]
        );
        assert!(
            c[1].contains("fill=\"none\"") && c[1].contains("stroke=\"#969696\""),
            "{}",
            c[1]
        );
    }

    #[test]
    fn bad_links_are_ignored_and_duplicates_merged() {
        let nodes = [node("a", true), node("b", true)];
        let links = [(0, 1), (1, 0), (0, 2), (7, usize::MAX), (1, 1)];
        let svg = cluster_graph(&nodes, &links, 400, 300);
        assert!(svg.contains("data-links=\"1\""), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn hostile_names_are_escaped() {
        let svg = cluster_graph(&[node("<script>alert('x')</script>", true)], &[], 400, 300);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn empty_single_and_many_nodes_render() {
        let svg = cluster_graph(&[], &[(0, 1)], 400, 300);
        assert!(svg.contains("no nodes") && svg.contains("data-links=\"0\""));
        let svg = cluster_graph(&[node("solo", false)], &[], 0, 0);
        assert!(svg.contains("data-nodes=\"0\"") && circles(&svg).len() == 1);
        let many: Vec<GraphNode> = (0..200).map(|i| node(&format!("n{i}"), i % 3 != 0)).collect();
        let links: Vec<(usize, usize)> = (0..200).map(|i| (i, (i + 1) % 200)).collect();
        let svg = cluster_graph(&many, &links, 800, 600);
        assert_eq!(circles(&svg).len(), 200);
        assert!(svg.contains("data-links=\"200\""));
    }
}
