/** Mints a phone core token for any user: `npm run token -- user@example.com`. Uses JWT_SECRET (dev default locally). */
import { mintUserToken } from "@mentra-cluster/protocol";
import { loadConfig } from "../config.ts";

const email = process.argv[2];
if (!email || !email.includes("@")) {
  console.error("usage: npm run token -- <email>");
  process.exit(2);
}
console.log(mintUserToken(email, loadConfig().jwtSecret));
