
´
bookstore/v1/bookstore.protobookstore.v1"X
Book
id (Rid
title (	Rtitle
author (	Rauthor
year (Ryear" 
GetBookRequest
id (Rid"*
ListBooksRequest
author (	Rauthor"=
ListBooksResponse(
books (2.bookstore.v1.BookRbooks";
CreateBookRequest&
book (2.bookstore.v1.BookRbook2Ù
	Bookstore;
GetBook.bookstore.v1.GetBookRequest.bookstore.v1.BookL
	ListBooks.bookstore.v1.ListBooksRequest.bookstore.v1.ListBooksResponseA

CreateBook.bookstore.v1.CreateBookRequest.bookstore.v1.Bookbproto3