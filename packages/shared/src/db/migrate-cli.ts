import { loadConfig } from '../config';
import { runMigrations } from './migrate';

// `npm run db:migrate` and the one-shot migrate service of docker-compose.
const config = loadConfig();
await runMigrations(config.DATABASE_URL);
console.log('migrations applied');
