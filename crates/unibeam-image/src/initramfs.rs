//! An in-memory file tree written out as a reproducible newc cpio archive:
//! sorted entries, mtime 0, uid/gid 0, sequential inode numbers.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// What one path in the guest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// File contents read from the host at write time.
    HostFile {
        source: PathBuf,
        executable: bool,
    },
    Bytes {
        data: Vec<u8>,
        executable: bool,
    },
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// Guest paths (absolute, `/`-separated) to what they hold.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn normalise(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    format!("/{trimmed}")
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds a node and every missing parent directory. A later insert for
    /// the same path replaces the earlier one.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = normalise(path);
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| *d != Path::new("/")) {
            self.nodes
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Node::Dir);
            parent = dir.parent();
        }
        self.nodes.insert(path, node);
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalise(path))
    }

    pub fn nodes(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn into_nodes(self) -> impl Iterator<Item = (String, Node)> {
        self.nodes.into_iter()
    }

    /// Writes the tree as a newc archive, parents before children.
    pub fn write_cpio<W: Write>(&self, mut out: W) -> io::Result<W> {
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let header = cpio::newc::Builder::new(name)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            out = match node {
                Node::Dir => header.mode(S_IFDIR | 0o755).nlink(2).write(out, 0).finish()?,
                Node::HostFile { source, executable } => {
                    let data = fs::read(source)?;
                    write_data(header.mode(S_IFREG | file_mode(*executable)), out, &data)?
                }
                Node::Bytes { data, executable } => {
                    write_data(header.mode(S_IFREG | file_mode(*executable)), out, data)?
                }
                Node::Symlink(target) => write_data(header.mode(S_IFLNK | 0o777), out, target.as_bytes())?,
                Node::CharDevice { major, minor } => header
                    .mode(S_IFCHR | 0o600)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .write(out, 0)
                    .finish()?,
            };
        }
        cpio::newc::trailer(out)
    }
}

/// Host permission bits vary with umask; the image must not.
fn file_mode(executable: bool) -> u32 {
    if executable {
        0o755
    } else {
        0o644
    }
}

fn write_data<W: Write>(header: cpio::newc::Builder, out: W, data: &[u8]) -> io::Result<W> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB in initramfs"))?;
    let mut writer = header.write(out, size);
    writer.write_all(data)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(archive: &[u8]) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                return out;
            }
            out.push((reader.entry().name().to_string(), reader.entry().mode()));
            rest = reader.finish().unwrap();
        }
    }

    #[test]
    fn parents_come_first_and_order_is_sorted() {
        let mut tree = Tree::new();
        tree.insert(
            "/usr/lib/x.so",
            Node::Bytes {
                data: b"x".to_vec(),
                executable: false,
            },
        );
        tree.insert(
            "/init",
            Node::Bytes {
                data: b"i".to_vec(),
                executable: true,
            },
        );
        tree.insert("dev/console", Node::CharDevice { major: 5, minor: 1 });
        let archive = tree.write_cpio(Vec::new()).unwrap();
        let listed = names(&archive);
        let paths: Vec<_> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            paths,
            ["dev", "dev/console", "init", "usr", "usr/lib", "usr/lib/x.so"]
        );
        assert_eq!(listed[2].1, S_IFREG | 0o755);
        assert_eq!(listed[1].1, S_IFCHR | 0o600);
    }

    #[test]
    fn same_tree_gives_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "data").unwrap();
        let build = || {
            let mut tree = Tree::new();
            tree.insert(
                "/release/a/f",
                Node::HostFile {
                    source: file.clone(),
                    executable: false,
                },
            );
            tree.insert("/release/a/l", Node::Symlink("f".into()));
            tree.write_cpio(Vec::new()).unwrap()
        };
        let first = build();
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&file, "data").unwrap(); // new mtime, same content
        assert_eq!(first, build());
    }
}
