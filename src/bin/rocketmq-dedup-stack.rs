//! `rocketmq-dedup-stack namesrv|broker …`: the embedded RocketMQ name server or broker, one
//! role per process, on 127.0.0.1. The end-to-end tests start it through the testkit.

fn main() {
    rocketmq_dedup_stack::serve_if_requested();
    eprintln!("usage: rocketmq-dedup-stack namesrv --port P | broker --port P --ha-port H --namesrv ADDR --store DIR");
    std::process::exit(2);
}
