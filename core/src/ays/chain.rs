//! The store chain policy: in which order the layers are asked for a blob or a tree, what to do
//! after each answer, and which faster layers get a copy of what was found further down.
//!
//! Order: the debug overlay (only for a file the overlay holds), the local cache, each grid cache
//! in configuration order, then the mount's store. A miss, a failure (unreachable, an error
//! status, a malformed answer) or a corrupt copy (its md5 differs) moves on to the next layer.
//! What is found is written back into every faster layer that missed it or held a corrupt copy
//! (never into one that failed, which is likely unreachable; never into the debug overlay).
//! Metadata goes back into the local cache always, and into a grid cache only as a whole tree
//! (`PUT /stor/md/{ays_id}`) when it came from the store.

use std::fmt;

/// One layer of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// The debug Redis of the mount (`debug:files:$mount`).
    Debug,
    /// The local Redis-protocol cache (`[[cache.local]]`).
    Local,
    /// The i-th `[[cache.grid]]`.
    Grid(usize),
    /// The mount's `ays.stor`.
    Store,
}

/// What one layer answered, other than the thing itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The layer does not have it.
    Missing,
    /// The layer could not be asked or answered nonsense; the message says how.
    Failed(String),
    /// The layer has a copy that fails its md5 (or size) check.
    Corrupt(String),
}

/// What is being fetched (write-back differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goods {
    Blob,
    /// A tree; `whole`: the entire `md:` hash (not only a mount's sub-path).
    Tree { whole: bool },
}

/// The layers a mount has.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Layers {
    pub local: bool,
    pub grids: usize,
    pub store: bool,
}

impl Layers {
    /// The order for a fetch; `debug` puts the debug overlay first.
    pub fn order(&self, debug: bool) -> Vec<Layer> {
        let mut v = Vec::new();
        if debug {
            v.push(Layer::Debug);
        }
        if self.local {
            v.push(Layer::Local);
        }
        v.extend((0..self.grids).map(Layer::Grid));
        if self.store {
            v.push(Layer::Store);
        }
        v
    }
}

/// One fetch walking down the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    order: Vec<Layer>,
    pos: usize,
    tried: Vec<(Layer, Attempt)>,
}

impl Fetch {
    pub fn new(order: Vec<Layer>) -> Fetch {
        Fetch { order, pos: 0, tried: Vec::new() }
    }

    /// The layer to ask now; `None` when every layer was tried.
    pub fn current(&self) -> Option<Layer> {
        self.order.get(self.pos).copied()
    }

    /// Records the current layer's answer and moves on; returns the next layer to ask.
    pub fn record(&mut self, outcome: Attempt) -> Option<Layer> {
        if let Some(l) = self.current() {
            self.tried.push((l, outcome));
            self.pos += 1;
        }
        self.current()
    }

    /// Every answer so far.
    pub fn tried(&self) -> &[(Layer, Attempt)] {
        &self.tried
    }

    /// The faster layers that should get a copy of what `found` had.
    pub fn write_back(&self, found: Layer, goods: Goods) -> Vec<Layer> {
        self.tried
            .iter()
            .filter(|(l, a)| *l < found && matches!(a, Attempt::Missing | Attempt::Corrupt(_)))
            .filter(|(l, _)| match (l, goods) {
                (Layer::Debug | Layer::Store, _) => false,
                (Layer::Local, _) => true,
                (Layer::Grid(_), Goods::Blob) => true,
                (Layer::Grid(_), Goods::Tree { whole }) => whole && found == Layer::Store,
            })
            .map(|(l, _)| *l)
            .collect()
    }

    /// One line saying what every layer answered, e.g.
    /// `local cache 127.0.0.1:6379: missing; grid cache http://g:8080: failed: timeout`.
    pub fn summary(&self, names: &LayerNames) -> String {
        if self.tried.is_empty() {
            return "no layer is configured".into();
        }
        self.tried
            .iter()
            .map(|(l, a)| {
                let what = match a {
                    Attempt::Missing => "missing".to_string(),
                    Attempt::Failed(m) => format!("failed: {m}"),
                    Attempt::Corrupt(m) => format!("corrupt: {m}"),
                };
                format!("{}: {what}", names.name(*l))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Human names of a mount's layers, for log lines (URLs without credentials).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LayerNames {
    pub local: String,
    pub grids: Vec<String>,
    pub store: String,
    pub debug: String,
}

impl LayerNames {
    pub fn name(&self, l: Layer) -> LayerName<'_> {
        LayerName(self, l)
    }
}

/// Displays one layer's name.
pub struct LayerName<'a>(&'a LayerNames, Layer);

impl fmt::Display for LayerName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match self.1 {
            Layer::Debug => write!(f, "debug redis {}", n.debug),
            Layer::Local => write!(f, "local cache {}", n.local),
            Layer::Grid(i) => write!(f, "grid cache {}", n.grids.get(i).map_or("?", String::as_str)),
            Layer::Store => write!(f, "store {}", n.store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_next() {
        let layers = Layers { local: true, grids: 2, store: true };
        assert_eq!(layers.order(false), vec![Layer::Local, Layer::Grid(0), Layer::Grid(1), Layer::Store]);
        assert_eq!(layers.order(true)[0], Layer::Debug);
        let none = Layers::default();
        assert!(Fetch::new(none.order(false)).current().is_none());
        let mut f = Fetch::new(layers.order(false));
        assert_eq!(f.current(), Some(Layer::Local));
        assert_eq!(f.record(Attempt::Corrupt("md5 x".into())), Some(Layer::Grid(0)));
        assert_eq!(f.record(Attempt::Failed("timeout".into())), Some(Layer::Grid(1)));
        assert_eq!(f.record(Attempt::Missing), Some(Layer::Store));
        // Found in the store: the corrupt local copy is replaced, the grid that missed gets one,
        // the failed grid gets nothing.
        assert_eq!(f.write_back(Layer::Store, Goods::Blob), vec![Layer::Local, Layer::Grid(1)]);
        assert_eq!(f.write_back(Layer::Store, Goods::Tree { whole: true }), vec![Layer::Local, Layer::Grid(1)]);
        assert_eq!(f.write_back(Layer::Store, Goods::Tree { whole: false }), vec![Layer::Local]);
        assert_eq!(f.record(Attempt::Missing), None);
        let names = LayerNames {
            local: "127.0.0.1:1".into(),
            grids: vec!["http://a".into(), "http://b".into()],
            store: "jumpscale".into(),
            debug: String::new(),
        };
        let s = f.summary(&names);
        assert!(s.starts_with("local cache 127.0.0.1:1: corrupt: md5 x; grid cache http://a: failed: timeout"), "{s}");
        assert!(s.ends_with("store jumpscale: missing"), "{s}");
    }

    #[test]
    fn grid_found_writes_back_locally_only_for_trees() {
        let layers = Layers { local: true, grids: 1, store: true };
        let mut f = Fetch::new(layers.order(true));
        f.record(Attempt::Missing); // debug
        f.record(Attempt::Missing); // local
        assert_eq!(f.current(), Some(Layer::Grid(0)));
        assert_eq!(f.write_back(Layer::Grid(0), Goods::Blob), vec![Layer::Local]);
        assert_eq!(f.write_back(Layer::Grid(0), Goods::Tree { whole: true }), vec![Layer::Local]);
    }
}
