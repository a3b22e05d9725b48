//! The `intercom` binary: the peer with the built-in contract (Intercom's sample contract
//! and trac-peer's chat operations).

fn main() -> anyhow::Result<()> {
    intercom::main_with_contract(std::sync::Arc::new(
        intercom_contracts::builtin::BuiltinContract,
    ))
}
