import { Type } from 'typebox'

// Shared reply shapes, so every route documents its errors the same way.
export const ErrorReply = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String()
})

export const errorReplies = (...codes: number[]) =>
  Object.fromEntries(codes.map((c) => [c, ErrorReply]))

export const TokenReply = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer()
})

export const Credentials = Type.Object({
  email: Type.String({ minLength: 1, maxLength: 320 }),
  // The policy (8–256 after NFKC) is checked in code with a clear message; this only caps
  // what we are willing to read at all.
  password: Type.String({ minLength: 1, maxLength: 1024 })
})

export const Uuid = Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' })
