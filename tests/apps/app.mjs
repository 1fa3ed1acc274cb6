// A Node server (node:http only, no npm packages) that routes the way many Node apps do:
// on the WHATWG `new URL(req.url, base).pathname`, which turns `\` into `/` and resolves
// `..`. The integration tests (tests/common/apps.rs) compare it with what the proxy saw.
//
//   node app.mjs PORT     prints `listening 127.0.0.1:PORT` once it accepts
//
// Every request gets JSON: route ("admin" for a pathname under /admin/, else "public"),
// pathname, url (req.url as received), headers, httpVersion, bodyLen; 400 when the URL
// does not parse. `/__seen` answers the url of every request so far (itself not included).
import http from 'node:http';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node app.mjs PORT');
  process.exit(2);
}

// Every request's url, in order of arrival: a test asks whether anything got through.
const seen = [];

const server = http.createServer((req, res) => {
  if (req.url === '/__seen') {
    const body = JSON.stringify({ paths: seen });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  seen.push(req.url);
  let bodyLen = 0;
  req.on('data', (chunk) => { bodyLen += chunk.length; });
  req.on('end', () => {
    let status = 200;
    let answer;
    try {
      const { pathname } = new URL(req.url, 'http://x');
      const route = pathname.startsWith('/admin/') ? 'admin' : 'public';
      answer = { route, pathname, url: req.url, headers: req.headers, httpVersion: req.httpVersion, bodyLen };
    } catch (e) {
      status = 400;
      answer = { route: null, error: String(e), url: req.url, headers: req.headers, httpVersion: req.httpVersion, bodyLen };
    }
    const body = JSON.stringify(answer);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});

server.listen(port, '127.0.0.1', () => console.log(`listening 127.0.0.1:${port}`));
