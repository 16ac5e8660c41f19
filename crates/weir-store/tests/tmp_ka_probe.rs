use std::time::Duration;
use weir_testkit::Etcd;
use weir_store::etcd::client::*;

fn conns(port: u16) -> String {
    let o = std::process::Command::new("ss").args(["-tn", "state", "established", &format!("( dport = :{port} )")]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).lines().skip(1).map(|l| l.split_whitespace().nth(2).unwrap_or("").to_owned()).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let etcd = Etcd::start();
    let cfg = weir_config::EtcdSource { endpoints: vec![etcd.endpoint()], prefix: "/weir".into(), timeout: Duration::from_secs(5), user: None, password: None, tls: None };
    let mut c = EtcdConn::connect(&cfg, &etcd.endpoint()).await.unwrap();
    let mut w = c.watch("/weir/", 0).await.unwrap();
    eprintln!("start {}", conns(etcd.port()));
    for _ in 0..12 { tokio::time::sleep(Duration::from_secs(5)).await; eprintln!("  {}", conns(etcd.port())); }
    etcd.put("/weir/a", "1").await;
    eprintln!("got {:?}", tokio::time::timeout(Duration::from_secs(5), w.next()).await);
}
