import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'

// Authenticated encryption of private keys at rest (AES-256-GCM). Several secrets may be
// configured: the first seals, every one of them opens, so the secret itself can rotate.
// The sealed text names the secret (by a short hash) so a wrong secret is reported as such.
export class WrongSecretError extends Error {
  override name = 'WrongSecretError'
}

interface Secret {
  id: string
  key: Buffer
}

export class SealedBox {
  readonly #secrets: Secret[]

  constructor(secrets: string[]) {
    if (secrets.length === 0) throw new Error('at least one key-encryption secret is required')
    this.#secrets = secrets.map((s) => {
      const key = Buffer.from(hkdfSync('sha256', s, 'keysmith', 'signing-key-encryption', 32))
      return { id: createHash('sha256').update(key).digest('hex').slice(0, 12), key }
    })
  }

  get sealingSecretId(): string {
    return this.#secrets[0]!.id
  }

  // `context` (the key id) is bound as associated data: a sealed key moved to another row
  // fails to open instead of silently serving as a different key.
  seal(plaintext: string, context: string): string {
    const { id, key } = this.#secrets[0]!
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', key, iv).setAAD(Buffer.from(context))
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
    return ['v1', id, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), ct.toString('base64url')].join('.')
  }

  open(sealed: string, context: string): string {
    const [version, id, iv, tag, ct] = sealed.split('.')
    const secret = this.#secrets.find((s) => s.id === id)
    if (version !== 'v1' || !secret || !iv || !tag || ct === undefined) {
      throw new WrongSecretError('KEY_ENCRYPTION_SECRET does not match the secret that encrypted the stored signing keys')
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', secret.key, Buffer.from(iv, 'base64url'))
        .setAAD(Buffer.from(context))
        .setAuthTag(Buffer.from(tag, 'base64url'))
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8')
    } catch {
      throw new WrongSecretError(`stored signing key ${context} failed authentication: it was altered or sealed with another secret`)
    }
  }

  sealedWith(sealed: string): string | undefined {
    return sealed.split('.')[1]
  }
}
