//! Files that declare more than they hold are refused by every engine before anything is
//! allocated, with an error that names the tensor and the setting to raise.

use edgekd_runtime::proto::{
    data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use edgekd_runtime::{Backend, Error, Limits, Model, Options};
use prost::Message;

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Option<i64>> = dims.iter().map(|&d| Some(d)).collect();
    ValueInfoProto::float_tensor(name, &dims)
}

/// `x [1, 4] -> MatMul(w) -> y`, with `w` declared as `w_dims` over 16 floats of data.
fn matmul(w_dims: &[i64], edit: impl FnOnce(&mut GraphProto)) -> Vec<u8> {
    let mut graph = GraphProto {
        node: vec![NodeProto {
            op_type: "MatMul".into(),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            name: "mm".into(),
            ..Default::default()
        }],
        name: "limits".into(),
        initializer: vec![TensorProto {
            name: "w".into(),
            dims: w_dims.to_vec(),
            data_type: data_type::FLOAT,
            raw_data: vec![0; 64],
            ..Default::default()
        }],
        input: vec![value("x", &[1, 4])],
        output: vec![value("y", &[1, 4])],
        ..Default::default()
    };
    edit(&mut graph);
    ModelProto::opset13(graph).encode_to_vec()
}

fn backends() -> Vec<Backend> {
    [Backend::Auto, Backend::Native, Backend::Tract]
        .into_iter()
        .filter(|b| b.available())
        .collect()
}

fn load(bytes: &[u8], backend: Backend, limits: Limits) -> Result<Model, Error> {
    Model::from_bytes_with(
        bytes,
        Options {
            backend,
            limits,
            ..Default::default()
        },
    )
}

/// Loads on every engine, expecting [`Error::TooLarge`]; returns its message.
fn too_large(bytes: &[u8], limits: Limits) -> String {
    let mut message = String::new();
    for b in backends() {
        match load(bytes, b, limits) {
            Err(e @ Error::TooLarge { .. }) => message = e.to_string(),
            other => panic!("{b}: expected a size refusal, got {other:?}"),
        }
    }
    message
}

#[test]
fn the_well_formed_file_loads() {
    let bytes = matmul(&[4, 4], |_| {});
    for b in backends() {
        load(&bytes, b, Limits::default()).unwrap_or_else(|e| panic!("{b}: {e}"));
    }
}

#[test]
fn a_tenth_of_a_kilobyte_declaring_a_trillion_elements_is_refused() {
    let bytes = matmul(&[1_000_000, 1_000_000], |_| {});
    assert!(bytes.len() < 300, "{} bytes", bytes.len());
    let err = too_large(&bytes, Limits::default());
    assert!(
        err.contains("tensor `w`")
            && err.contains("[1000000, 1000000]")
            && err.contains("1000000000000 elements")
            && err.contains("max-tensor-elements"),
        "{err}"
    );
}

#[test]
fn a_shape_whose_product_overflows_is_refused() {
    let bytes = matmul(&[1 << 40, 1 << 40], |_| {});
    let err = too_large(&bytes, Limits::default());
    assert!(
        err.contains("more elements than 64 bits can count"),
        "{err}"
    );
    // Each dimension alone fits; only the product does not.
    let bytes = matmul(&[i64::MAX, 3], |_| {});
    assert!(too_large(&bytes, Limits::default()).contains("64 bits"));
}

#[test]
fn negative_dimensions_are_corrupt() {
    let bytes = matmul(&[-4, -4], |_| {});
    for b in backends() {
        let err = load(&bytes, b, Limits::default()).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. }) && err.to_string().contains("negative"),
            "{b}: {err}"
        );
    }
}

#[test]
fn declared_values_constants_and_subgraphs_are_counted_too() {
    let huge = [100_000, 100_000, 100];
    let limits = Limits::default();
    let in_value_info = matmul(&[4, 4], |g| g.value_info.push(value("mid", &huge)));
    assert!(too_large(&in_value_info, limits).contains("value `mid`"));
    let in_input = matmul(&[4, 4], |g| g.input[0] = value("x", &huge));
    assert!(too_large(&in_input, limits).contains("value `x`"));
    let big_tensor = TensorProto {
        name: "c".into(),
        dims: huge.to_vec(),
        data_type: data_type::FLOAT,
        ..Default::default()
    };
    let constant = |t: TensorProto| NodeProto {
        op_type: "Constant".into(),
        output: vec!["c".into()],
        name: "c".into(),
        attribute: vec![AttributeProto {
            name: "value".into(),
            r#type: 4,
            t: Some(t),
            ..Default::default()
        }],
        ..Default::default()
    };
    let in_constant = matmul(&[4, 4], |g| g.node.insert(0, constant(big_tensor.clone())));
    assert!(too_large(&in_constant, limits).contains("tensor `c`"));
    // Three graphs deep, in an `If`'s branch.
    let inner = GraphProto {
        node: vec![constant(big_tensor.clone())],
        ..Default::default()
    };
    let middle = GraphProto {
        node: vec![NodeProto {
            op_type: "If".into(),
            attribute: vec![AttributeProto {
                name: "then_branch".into(),
                r#type: 5,
                g: Some(Box::new(inner)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let in_subgraph = matmul(&[4, 4], |g| {
        g.node.push(NodeProto {
            op_type: "If".into(),
            attribute: vec![AttributeProto {
                name: "else_branch".into(),
                r#type: 5,
                graphs: vec![middle],
                ..Default::default()
            }],
            ..Default::default()
        })
    });
    assert!(too_large(&in_subgraph, limits).contains("tensor `c`"));
}

#[test]
fn limits_are_settable() {
    let bytes = matmul(&[4, 4], |_| {});
    let tight = Limits {
        max_tensor_elements: 15,
        ..Default::default()
    };
    let err = too_large(&bytes, tight);
    assert!(
        err.contains("16 elements") && err.contains("limit of 15"),
        "{err}"
    );
    let small_file = Limits {
        max_model_bytes: 100,
        ..Default::default()
    };
    let err = too_large(&bytes, small_file);
    assert!(
        err.contains(&format!("{} bytes", bytes.len())) && err.contains("max-model-bytes"),
        "{err}"
    );
    // From a file, the size is refused before the file is read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, &bytes).unwrap();
    let err = Model::load_with(
        &path,
        Options {
            limits: small_file,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}
