//! Rebuild when a migration changes, since they are embedded in the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
