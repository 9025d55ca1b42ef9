mod common;
use common::*;

#[test]
fn welcome_reply_exit() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Welcome!");
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("exit\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}
