/**
 * One definition per route. `addRoute` registers it with fastify (scope, body limit, success
 * status, parsed path and query parameters) and keeps it on the route's config, and the OpenAPI
 * document is generated from the registered definitions (`api/openapi.ts`): what is documented is
 * what runs, with no second copy to drift.
 */
import type { Server } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as z from 'zod';
import type { RouteScope } from './auth.js';
import type { ComponentName } from './openapi.js';

/** Every route's JSON body is small unless the route says otherwise (creating an environment does). */
export const DEFAULT_BODY_LIMIT = 64 * 1024;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's definition, for the OpenAPI document; see `api/route.ts`. */
    doc?: RouteDoc;
  }
}

/**
 * A JSON body: a contract schema by its name under `components.schemas`, a list of them
 * (`{ items: [...] }`), or a schema of its own for a small answer the contract has no name for.
 */
export type JsonBody = ComponentName | { items: ComponentName } | z.ZodType;

/** The answer of a route that succeeds. */
export interface SuccessResponse {
  /** Set before the handler runs; errors replace it with their own. */
  status: 200 | 201 | 202;
  description: string;
  /** An `application/json` body. */
  json?: JsonBody;
  /** Or a body of another media type, sent as the `content-type` (set before the handler runs). */
  mediaType?: string;
}

/** What a route reads from the request body. */
export type RequestBodyDoc =
  /** JSON that the service validates with this contract schema. */
  | { json: ComponentName }
  /** Bytes of one of these media types, handed to the handler as a stream. */
  | { mediaTypes: readonly string[]; description: string };

/** Error statuses a route answers with an `ErrorBody`, and when. */
export type ErrorDocs = Partial<Record<400 | 401 | 403 | 404 | 409 | 413 | 429 | 503, string>>;

/** An object of fields parsed from strings: what a path or a query string carries. */
export type InputSchema = z.ZodObject;

/** What the OpenAPI document says of a route. */
export interface RouteDoc {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** fastify's syntax: `/v1/environments/:id`. */
  url: string;
  scope: RouteScope;
  summary: string;
  description?: string;
  /** One field per `:param` of `url`, no more and no fewer. */
  params?: InputSchema;
  query?: InputSchema;
  body?: RequestBodyDoc;
  /** The route's own limit on a JSON body, in bytes; `DEFAULT_BODY_LIMIT` otherwise. */
  bodyLimit?: number;
  response: SuccessResponse;
  /**
   * The errors particular to this route. Those any route may answer are added in the document:
   * 401 and 403 on routes that need a token, 400 on routes with inputs, 413 with a JSON body.
   */
  errors?: ErrorDocs;
}

const NO_INPUT = z.object({});

/** A route: its documentation, and the handler that gets its parsed parameters. */
export interface RouteDefinition<P extends InputSchema, Q extends InputSchema> extends RouteDoc {
  params?: P;
  query?: Q;
  handler(input: {
    params: z.output<P>;
    query: z.output<Q>;
    req: FastifyRequest;
    reply: FastifyReply;
  }): Promise<unknown>;
}

/** The `:name`s of a fastify url, in order. */
export const pathParamNames = (url: string): string[] => [...url.matchAll(/:(\w+)/g)].map((m) => m[1]!);

/**
 * Registers `def` on `app`. Path parameters and the query string are parsed with the route's zod
 * schemas before the handler runs (a mismatch is a 400 through `api/errors.ts`); the body is left
 * to the service, which validates it with the contract schema the document names.
 */
export function addRoute<P extends InputSchema = typeof NO_INPUT, Q extends InputSchema = typeof NO_INPUT>(
  app: FastifyInstance<Server>,
  def: RouteDefinition<P, Q>,
): void {
  const declared = Object.keys(def.params?.shape ?? {}).sort();
  const inUrl = pathParamNames(def.url).sort();
  if (declared.join() !== inUrl.join()) {
    throw new Error(
      `route ${def.method} ${def.url}: its path parameters (${inUrl.join(', ')}) and its params schema (${declared.join(', ')}) differ`,
    );
  }
  const { handler, ...doc } = def;
  app.route({
    method: def.method,
    url: def.url,
    config: { scope: def.scope, doc },
    ...(def.bodyLimit !== undefined ? { bodyLimit: def.bodyLimit } : {}),
    handler: async (req, reply) => {
      const params = (def.params ? def.params.parse(req.params) : {}) as z.output<P>;
      const query = (def.query ? def.query.parse(req.query) : {}) as z.output<Q>;
      reply.status(def.response.status);
      if (def.response.mediaType) reply.header('content-type', def.response.mediaType);
      return handler({ params, query, req, reply });
    },
  });
}
