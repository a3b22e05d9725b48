//! The task board app: the `intercom` peer with the task-board contract. Every flag and
//! subcommand of `intercom` works the same (`intercom-task-board run --peer-store-name ...`).

fn main() -> anyhow::Result<()> {
    intercom::main_with_contract(std::sync::Arc::new(intercom_task_board::TaskBoard))
}
