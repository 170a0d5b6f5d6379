//! Generates the gRPC service's Rust code from `proto/waitroom/v1/waitroom.proto` with protox (a protobuf compiler in
//! Rust: no protoc needed), and keeps its encoded descriptors for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["waitroom/v1/waitroom.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("waitroom_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
