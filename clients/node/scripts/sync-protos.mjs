// Copies the .proto files the client loads at run time from the repository's host/proto into
// this package's proto/, so the package works outside the checkout. `npm run sync-protos`
// after a proto change; test/protos.test.mjs fails while the copy differs.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Every proto the client loads, and what they import. */
export const PROTOS = [
  "baton/v1/modules.proto",
  "etcdserverpb/rpc.proto",
  "mvccpb/kv.proto",
  "authpb/auth.proto",
];

const here = dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = join(here, "..", "..", "..", "host", "proto");
export const COPY_DIR = join(here, "..", "proto");

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const proto of PROTOS) {
    mkdirSync(dirname(join(COPY_DIR, proto)), { recursive: true });
    copyFileSync(join(SOURCE_DIR, proto), join(COPY_DIR, proto));
    console.log(`copied ${proto}`);
  }
}
