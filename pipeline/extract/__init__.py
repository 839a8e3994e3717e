"""Extract: one HTTP client per source (auth, retries, limits), paginators that walk a list
into immutable pages, and record lists kept as the bytes the API sent (`rawjson`)."""
