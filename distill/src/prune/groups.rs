//! Which channels must be removed together. A channel is one index of a layer's output; the
//! same index also names an input of every layer that reads it, and residual additions and
//! depthwise convolutions tie the outputs of several layers into one set of channels. Walking
//! the [`LayerPlan`] with a union-find over these channel sets gives each set's members: every
//! (tensor, axis) that one of its indices selects along.

use crate::plan::{output_shape, LayerPlan, Shape};
use crate::spec::ModelSpec;

/// What a tensor axis in a group is to the group's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight whose slice along `axis` computes the channel (a filter, a neuron's row).
    Filter,
    /// A bias or batch-normalization tensor of the producing layer.
    Channel,
    /// A weight of a layer reading the channel (its input axis).
    Input,
}

/// One axis of one tensor whose indices are a group's channels; with `block` > 1 each channel
/// owns `block` consecutive indices (a flattened feature map's positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The parameter, e.g. `b0.conv1.weight`.
    pub param: String,
    /// The axis of that tensor.
    pub axis: usize,
    /// Indices per channel along `axis`.
    pub block: usize,
    /// Its relation to the channels.
    pub role: Role,
}

/// A layer producing a group's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// Parameter prefix, e.g. `fc1` or `b3.depthwise`.
    pub layer: String,
    /// Whether batch normalization follows it (its parameters then live under `{layer}.bn`).
    pub batch_norm: bool,
    /// Whether its output feeds nothing but the depthwise convolution after it (a MobileNetV2
    /// expansion): removing the channel there removes it here, so its own first-order term
    /// would count the same removal twice.
    pub chained: bool,
}

/// Channels that are kept or removed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// The layers whose outputs these channels are, in plan order.
    pub producers: Vec<Producer>,
    /// Channels in the group.
    pub width: usize,
    /// Every tensor axis the channels index.
    pub members: Vec<Member>,
}

impl ChannelGroup {
    /// How reports name it: the first producer, and how many more are tied to it.
    pub fn name(&self) -> String {
        match self.producers.len() {
            1 => self.producers[0].layer.clone(),
            n => format!("{} +{} tied", self.producers[0].layer, n - 1),
        }
    }
}

struct Space {
    parent: usize,
    width: usize,
    /// The model's input or its classes: never pruned.
    fixed: bool,
}

#[derive(Default)]
struct Walk {
    spaces: Vec<Space>,
    members: Vec<(usize, Member)>,
    producers: Vec<(usize, Producer)>,
    /// The producer whose output the walk holds, when nothing else reads it yet.
    fresh: Option<usize>,
}

impl Walk {
    fn space(&mut self, width: usize, fixed: bool) -> usize {
        self.spaces.push(Space {
            parent: self.spaces.len(),
            width,
            fixed,
        });
        self.spaces.len() - 1
    }

    fn root(&mut self, mut s: usize) -> usize {
        while self.spaces[s].parent != s {
            let up = self.spaces[s].parent;
            self.spaces[s].parent = self.spaces[up].parent;
            s = up;
        }
        s
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            debug_assert_eq!(self.spaces[a].width, self.spaces[b].width);
            self.spaces[b].parent = a;
            self.spaces[a].fixed |= self.spaces[b].fixed;
        }
    }

    fn member(&mut self, space: usize, param: String, axis: usize, block: usize, role: Role) {
        let m = Member {
            param,
            axis,
            block,
            role,
        };
        self.members.push((space, m));
    }

    /// Walks `layers` from channels `input` (each `block` indices wide) of shape `shape`;
    /// returns the output's channels, block and shape.
    fn layers(
        &mut self,
        layers: &[LayerPlan],
        mut input: usize,
        mut block: usize,
        mut shape: Shape,
    ) -> (usize, usize, Shape) {
        for layer in layers {
            let next = output_shape(layer, shape).expect("validated specs fit");
            match layer {
                LayerPlan::Conv { name, conv, .. } => {
                    let out = self.space(conv.out_channels, false);
                    self.member(out, format!("{name}.weight"), 0, 1, Role::Filter);
                    self.member(out, format!("{name}.bias"), 0, 1, Role::Channel);
                    self.member(input, format!("{name}.weight"), 1, 1, Role::Input);
                    self.producers.push((out, producer(name, false)));
                    self.fresh = None;
                    input = out;
                }
                LayerPlan::ConvBn { name, conv, .. } => {
                    let depthwise = conv.groups > 1;
                    let out = if depthwise {
                        debug_assert_eq!(conv.groups, conv.in_channels);
                        if let Some(k) = self.fresh {
                            self.producers[k].1.chained = true;
                        }
                        input
                    } else {
                        let out = self.space(conv.out_channels, false);
                        self.member(input, format!("{name}.weight"), 1, 1, Role::Input);
                        out
                    };
                    self.member(out, format!("{name}.weight"), 0, 1, Role::Filter);
                    for t in ["weight", "bias", "running_mean", "running_var"] {
                        self.member(out, format!("{name}.bn.{t}"), 0, 1, Role::Channel);
                    }
                    self.fresh = (!depthwise).then_some(self.producers.len());
                    self.producers.push((out, producer(name, true)));
                    input = out;
                }
                LayerPlan::Residual { main, shortcut, .. } => {
                    // The block's input also reaches the addition: not only its first layer's.
                    self.fresh = None;
                    let (out, _, _) = self.layers(main, input, 1, shape);
                    let other = match shortcut {
                        Some(s) => self.layers(std::slice::from_ref(s), input, 1, shape).0,
                        None => input,
                    };
                    self.union(out, other);
                    self.fresh = None;
                    input = out;
                }
                LayerPlan::GlobalAvgPool => block = 1,
                LayerPlan::Flatten => {
                    if let Shape::Map(_, h, w) = shape {
                        block = h * w;
                    }
                }
                LayerPlan::Linear {
                    name,
                    outputs,
                    hidden,
                    ..
                } => {
                    self.member(input, format!("{name}.weight"), 1, block, Role::Input);
                    let out = self.space(*outputs, !hidden);
                    self.member(out, format!("{name}.weight"), 0, 1, Role::Filter);
                    self.member(out, format!("{name}.bias"), 0, 1, Role::Channel);
                    self.producers.push((out, producer(name, false)));
                    self.fresh = None;
                    (input, block) = (out, 1);
                }
            }
            shape = next;
        }
        (input, block, shape)
    }
}

fn producer(layer: &str, batch_norm: bool) -> Producer {
    Producer {
        layer: layer.into(),
        batch_norm,
        chained: false,
    }
}

/// The groups of channels `spec` can lose, in plan order of their first producer (the
/// input's channels and the classes are never among them).
pub fn channel_groups(spec: &ModelSpec) -> Vec<ChannelGroup> {
    let mut walk = Walk::default();
    let i = spec.input;
    let (input, shape) = match spec.architecture {
        crate::architecture::Architecture::Mlp { .. } => {
            (walk.space(i.len(), true), Shape::Flat(i.len()))
        }
        _ => (
            walk.space(i.channels, true),
            Shape::Map(i.channels, i.rows, i.cols),
        ),
    };
    walk.layers(&spec.plan(), input, 1, shape);

    let mut order: Vec<usize> = Vec::new();
    let mut groups: Vec<ChannelGroup> = Vec::new();
    let mut index_of = |walk: &mut Walk, space: usize, groups: &mut Vec<ChannelGroup>| {
        let root = walk.root(space);
        if walk.spaces[root].fixed {
            return None;
        }
        Some(match order.iter().position(|&r| r == root) {
            Some(k) => k,
            None => {
                order.push(root);
                groups.push(ChannelGroup {
                    producers: vec![],
                    width: walk.spaces[root].width,
                    members: vec![],
                });
                groups.len() - 1
            }
        })
    };
    for (space, p) in std::mem::take(&mut walk.producers) {
        if let Some(k) = index_of(&mut walk, space, &mut groups) {
            groups[k].producers.push(p);
        }
    }
    for (space, m) in std::mem::take(&mut walk.members) {
        if let Some(k) = index_of(&mut walk, space, &mut groups) {
            groups[k].members.push(m);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<(String, usize)> {
        let mut s = ModelSpec::parse(spec).unwrap();
        s.input = crate::InputShape {
            channels: 1,
            rows: 28,
            cols: 28,
        };
        channel_groups(&s)
            .iter()
            .map(|g| (g.name(), g.width))
            .collect()
    }

    #[test]
    fn mlp_neurons_are_one_group_per_hidden_layer() {
        assert_eq!(
            names("mlp:1200-300"),
            vec![("fc1".into(), 1200), ("fc2".into(), 300)]
        );
        assert!(names("mlp:").is_empty());
        let g = &channel_groups(&ModelSpec::parse("mlp:8").unwrap())[0];
        let axes: Vec<(&str, usize, Role)> = g
            .members
            .iter()
            .map(|m| (m.param.as_str(), m.axis, m.role))
            .collect();
        assert_eq!(
            axes,
            vec![
                ("fc1.weight", 0, Role::Filter),
                ("fc1.bias", 0, Role::Channel),
                ("out.weight", 1, Role::Input),
            ]
        );
    }

    #[test]
    fn a_flattened_feature_map_gives_each_channel_its_positions() {
        let s = ModelSpec::parse("cnn:lenet5").unwrap();
        let groups = channel_groups(&s);
        assert_eq!(groups.len(), 4);
        let fc_input = groups[1]
            .members
            .iter()
            .find(|m| m.param == "fc1.weight")
            .unwrap();
        // conv2's 16 channels of 5x5 positions flatten into fc1's 400 inputs.
        assert_eq!((fc_input.axis, fc_input.block), (1, 25));
    }

    #[test]
    fn residual_additions_tie_a_stage_and_its_stem() {
        let groups = names("resnet:20");
        // stem + 3 blocks of stage 1; stage 2's projection + 3 blocks; stage 3 likewise;
        // then the nine blocks' inner channels.
        let tied: Vec<_> = groups.iter().filter(|(n, _)| n.contains("tied")).collect();
        assert_eq!(
            tied,
            vec![
                &("stem +3 tied".to_string(), 16),
                &("b3.conv2 +3 tied".to_string(), 32),
                &("b6.conv2 +3 tied".to_string(), 64)
            ]
        );
        assert_eq!(groups.len(), 3 + 9);
    }

    #[test]
    fn depthwise_channels_belong_to_their_expansion() {
        let s = ModelSpec::parse("mobilenetv2:0.5").unwrap();
        let groups = channel_groups(&s);
        let g = groups
            .iter()
            .find(|g| g.producers[0].layer == "b1.expand")
            .unwrap();
        let layers: Vec<&str> = g.producers.iter().map(|p| p.layer.as_str()).collect();
        assert_eq!(layers, vec!["b1.expand", "b1.depthwise"]);
        assert!(g.producers[0].chained && !g.producers[1].chained);
        // The stem of mobilenetv2:0.5 (16 channels) feeds b0's depthwise only (b0 ends at 8
        // channels, no residual): chained too. At 0.25 the block adds the stem's output back.
        let stem = |s: &ModelSpec| channel_groups(s)[0].producers[0].clone();
        assert!(stem(&s).chained);
        assert!(!stem(&ModelSpec::parse("mobilenetv2:0.25").unwrap()).chained);
        assert!(g
            .members
            .iter()
            .any(|m| m.param == "b1.project.weight" && m.axis == 1));
        // Every parameter tensor of every layer appears in some group except the stem's
        // input axis and the classifier's outputs.
        let all: usize = groups.iter().map(|g| g.members.len()).sum();
        assert!(all > 0);
    }
}
