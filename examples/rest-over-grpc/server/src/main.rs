//! The gRPC upstream of `examples/rest-over-grpc`: an in-memory `bookstore.v1.Bookstore` service
//! (tonic, HTTP/2 cleartext) that the gateway's `builtin:grpc-transcode` calls for REST clients.
//!
//! ```text
//! bookstore-grpc-demo [--addr 127.0.0.1:50051]   serve (two books to start with)
//! bookstore-grpc-demo --descriptor-out FILE      write the service's FileDescriptorSet and exit
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use tonic::{Request, Response, Status};

#[allow(clippy::all, missing_docs)]
mod pb {
    tonic::include_proto!("bookstore.v1");
}

use pb::bookstore_server::{Bookstore, BookstoreServer};
use pb::{Book, CreateBookRequest, GetBookRequest, ListBooksRequest, ListBooksResponse};

/// proto/bookstore/v1/bookstore.proto as a FileDescriptorSet (build.rs, protox): the example's
/// `bookstore.pb`.
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bookstore.pb"));

/// The books, by id.
struct Store {
    books: Mutex<BTreeMap<i64, Book>>,
}

impl Store {
    fn new() -> Self {
        let books = [(1, "The Left Hand of Darkness", "Ursula K. Le Guin", 1969), (2, "A Wizard of Earthsea", "Ursula K. Le Guin", 1968)]
            .into_iter()
            .map(|(id, title, author, year)| (id, Book { id, title: title.into(), author: author.into(), year }))
            .collect();
        Self { books: Mutex::new(books) }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Book>> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl Bookstore for Store {
    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        let id = request.into_inner().id;
        let book = self.books().get(&id).cloned();
        book.map(Response::new).ok_or_else(|| Status::not_found(format!("no book {id}")))
    }

    async fn list_books(&self, request: Request<ListBooksRequest>) -> Result<Response<ListBooksResponse>, Status> {
        let author = request.into_inner().author;
        let books = self.books().values().filter(|b| author.is_empty() || b.author == author).cloned().collect();
        Ok(Response::new(ListBooksResponse { books }))
    }

    async fn create_book(&self, request: Request<CreateBookRequest>) -> Result<Response<Book>, Status> {
        let book = request.into_inner().book.unwrap_or_default();
        if book.title.trim().is_empty() {
            return Err(Status::invalid_argument("a book needs a title"));
        }
        let mut books = self.books();
        let id = books.keys().next_back().map_or(1, |last| last + 1);
        let book = Book { id, ..book };
        books.insert(id, book.clone());
        Ok(Response::new(book))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = "127.0.0.1:50051".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--descriptor-out", Some(path)) => {
                std::fs::write(&path, DESCRIPTOR_SET)?;
                println!("wrote {path}");
                return Ok(());
            }
            ("--addr", Some(value)) => addr = value.parse()?,
            _ => return Err(format!("usage: bookstore-grpc-demo [--addr IP:PORT] [--descriptor-out FILE] (got `{arg}`)").into()),
        }
    }
    println!("bookstore gRPC demo listening on {addr} (h2c)");
    tonic::transport::Server::builder()
        .add_service(BookstoreServer::new(Store::new()))
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
